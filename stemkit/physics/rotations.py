"""Rotations: quaternions and matrices, uniform sampling, fundamental zones, misorientation.

Conventions (DESIGN.md, pinned by tests)
----------------------------------------
- An orientation is the rotation matrix ``R`` taking crystal-frame vectors to the lab
  frame, ``g_lab = R @ g_crystal``; a reflection appears at ``(kx, ky) = g_lab[:2]``
  with the beam along +z.
- Quaternions are ``(w, x, y, z)``, scalar first, unit norm, and represent the same
  active rotation as ``R``. ``q`` and ``-q`` are the same rotation; functions that
  return quaternions return the representative with ``w >= 0``.
- Crystal symmetry acts on the crystal side: ``R`` and ``R @ S`` are the same
  orientation for every proper rotation ``S`` of the point group (given as Cartesian
  matrices in the crystal frame, see :class:`stemkit.physics.symmetry.PointGroup`).
- orix's :class:`~orix.quaternion.Orientation` maps the sample (lab) frame to the
  crystal frame and applies symmetry on the left: an orix orientation is ``R⁻¹``.
  :func:`to_orix` and :func:`from_orix` are the only two places that know this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:  # pragma: no cover
    from stemkit.physics.symmetry import PointGroup

__all__ = [
    "as_rotation_matrices",
    "axis_angle_to_matrix",
    "from_orix",
    "matrix_to_quaternion",
    "misorientation_angle",
    "quaternion_conjugate",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "random_fundamental_zone",
    "random_quaternions",
    "reduce_to_fundamental_zone",
    "rotation_angle",
    "to_orix",
]

_CHUNK = 65536  # orientations per vectorised step when expanding by the symmetry operators


def _as_quaternions(q: ArrayLike) -> NDArray[np.float64]:
    """Return ``q`` as float quaternions of shape (..., 4), normalised."""
    q = np.asarray(q, dtype=float)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternions must have a last axis of length 4 (w, x, y, z); got shape {q.shape}.")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError("a quaternion has zero norm; quaternions must be non-zero (w, x, y, z).")
    return q / norm


def _canonical_sign(q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Flip quaternions to ``w >= 0`` (``q`` and ``-q`` are the same rotation)."""
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices (..., 3, 3) of quaternions (..., 4), scalar first.

    Examples
    --------
    >>> import numpy as np
    >>> R = quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])  # 90° about z
    >>> np.round(R @ [1, 0, 0], 12) + 0.0
    array([0., 1., 0.])
    """
    w, x, y, z = np.moveaxis(_as_quaternions(q), -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_quaternion(matrix: ArrayLike) -> NDArray[np.float64]:
    """Unit quaternions (..., 4), scalar first with ``w >= 0``, of rotation matrices (..., 3, 3).

    Uses the numerically stable branch (largest of w², x², y², z²) per matrix.
    """
    m = np.asarray(matrix, dtype=float)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3); got {m.shape}.")
    trace = np.trace(m, axis1=-2, axis2=-1)
    diag = np.diagonal(m, axis1=-2, axis2=-1)
    # 4·(w², x², y², z²) from the trace and the diagonal.
    squares = np.stack([1 + trace, 1 + 2 * diag[..., 0] - trace, 1 + 2 * diag[..., 1] - trace,
                        1 + 2 * diag[..., 2] - trace], axis=-1)
    best = np.argmax(squares, axis=-1)
    pivot = np.sqrt(np.maximum(np.take_along_axis(squares, best[..., None], -1)[..., 0], 1e-300))
    sums = {  # off-diagonal combinations giving 4·(product of two components)
        "wx": m[..., 2, 1] - m[..., 1, 2], "wy": m[..., 0, 2] - m[..., 2, 0], "wz": m[..., 1, 0] - m[..., 0, 1],
        "xy": m[..., 0, 1] + m[..., 1, 0], "xz": m[..., 0, 2] + m[..., 2, 0], "yz": m[..., 1, 2] + m[..., 2, 1],
    }
    candidates = np.stack([
        np.stack([pivot**2, sums["wx"], sums["wy"], sums["wz"]], -1),
        np.stack([sums["wx"], pivot**2, sums["xy"], sums["xz"]], -1),
        np.stack([sums["wy"], sums["xy"], pivot**2, sums["yz"]], -1),
        np.stack([sums["wz"], sums["xz"], sums["yz"], pivot**2], -1),
    ], axis=-2)
    q = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :] / (2 * pivot[..., None])
    return _canonical_sign(q / np.linalg.norm(q, axis=-1, keepdims=True))


def as_rotation_matrices(orientations: ArrayLike) -> NDArray[np.float64]:
    """Return orientations given as matrices (N, 3, 3) or quaternions (N, 4) as matrices (N, 3, 3).

    A single orientation ((3, 3) or (4,)) becomes a batch of one.
    """
    arr = np.asarray(orientations, dtype=float)
    if arr.shape[-2:] == (3, 3):
        return arr.reshape(-1, 3, 3)
    if arr.shape[-1:] == (4,):
        return quaternion_to_matrix(arr.reshape(-1, 4))
    raise ValueError(
        "orientations must be rotation matrices of shape (N, 3, 3) or scalar-first quaternions "
        f"of shape (N, 4); got shape {arr.shape}."
    )


def quaternion_multiply(q1: ArrayLike, q2: ArrayLike) -> NDArray[np.float64]:
    """Hamilton product ``q1 q2`` (broadcasting over leading axes): the rotation ``R1 @ R2``."""
    w1, x1, y1, z1 = np.moveaxis(np.asarray(q1, dtype=float), -1, 0)
    w2, x2, y2, z2 = np.moveaxis(np.asarray(q2, dtype=float), -1, 0)
    return np.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], axis=-1)


def quaternion_conjugate(q: ArrayLike) -> NDArray[np.float64]:
    """Conjugate ``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion."""
    return np.asarray(q, dtype=float) * np.array([1.0, -1.0, -1.0, -1.0])


def axis_angle_to_matrix(axis: ArrayLike, angle_deg: ArrayLike) -> NDArray[np.float64]:
    """Right-handed rotation(s) by ``angle_deg`` degrees about ``axis`` (..., 3), as (..., 3, 3)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = np.deg2rad(np.asarray(angle_deg, dtype=float))[..., None] / 2
    return quaternion_to_matrix(np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1))


def rotation_angle(rotations: ArrayLike) -> NDArray[np.float64]:
    """Rotation angle in degrees, in [0, 180], of matrices (..., 3, 3) or quaternions (..., 4)."""
    arr = np.asarray(rotations, dtype=float)
    if arr.shape[-2:] == (3, 3):
        cos = (np.trace(arr, axis1=-2, axis2=-1) - 1) / 2
        return np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))
    q = _as_quaternions(arr)
    return np.rad2deg(2 * np.arccos(np.clip(np.abs(q[..., 0]), 0.0, 1.0)))


def random_quaternions(n: int, seed: int | np.random.Generator | None = None) -> NDArray[np.float64]:
    """``n`` rotations drawn uniformly (Haar measure) from SO(3), as quaternions (n, 4) with ``w >= 0``.

    Normalised 4-D Gaussian vectors are uniform on the unit 3-sphere, hence uniform rotations.
    """
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((int(n), 4))
    return _canonical_sign(q / np.linalg.norm(q, axis=1, keepdims=True))


def reduce_to_fundamental_zone(orientations: ArrayLike, symmetry: PointGroup) -> NDArray[np.float64]:
    """Map orientations to their canonical symmetry-equivalent representative.

    Among ``R @ S`` for the proper rotations ``S`` of ``symmetry``, picks the one with the
    smallest rotation angle (largest ``|w|``); ties (on the zone boundary) go to the first
    symmetry operator in ``symmetry.rotations`` order.

    Parameters
    ----------
    orientations
        Quaternions (N, 4) or matrices (N, 3, 3).
    symmetry
        The crystal's point group (:attr:`stemkit.physics.Crystal.point_group`).

    Returns
    -------
    numpy.ndarray
        Quaternions (N, 4) with ``w >= 0``, inside the fundamental zone.
    """
    q = matrix_to_quaternion(as_rotation_matrices(orientations))
    symmetry_q = symmetry.quaternions
    reduced = np.empty_like(q)
    for start in range(0, len(q), _CHUNK):
        block = q[start:start + _CHUNK]
        equivalents = quaternion_multiply(block[:, None, :], symmetry_q[None, :, :])  # (n, n_sym, 4)
        abs_w = np.round(np.abs(equivalents[..., 0]), 12)  # rounding makes ties deterministic
        best = np.argmax(abs_w, axis=1)
        reduced[start:start + _CHUNK] = equivalents[np.arange(len(block)), best]
    return _canonical_sign(reduced)


def random_fundamental_zone(
    n: int, symmetry: PointGroup, seed: int | np.random.Generator | None = None
) -> NDArray[np.float64]:
    """``n`` orientations uniform over the fundamental zone of ``symmetry``, as quaternions (n, 4).

    Uniform random rotations reduced by :func:`reduce_to_fundamental_zone`; the reduction
    is measure-preserving, so the result is uniform over the zone.
    """
    return reduce_to_fundamental_zone(random_quaternions(n, seed), symmetry)


def misorientation_angle(
    orientations_1: ArrayLike, orientations_2: ArrayLike, symmetry: PointGroup | None = None
) -> NDArray[np.float64]:
    """Smallest rotation angle (degrees) between orientations under crystal symmetry.

    ``min over S of angle(R1ᵀ R2 S)``; with symmetry on both sides the minimum over
    ``S1ᵀ R1ᵀ R2 S2`` is the same number, since conjugation keeps rotation angles.

    Parameters
    ----------
    orientations_1, orientations_2
        Quaternions (N, 4) or matrices (N, 3, 3) (or one of each kind; broadcast if N = 1).
    symmetry
        The crystal's point group; ``None`` for no symmetry.

    Returns
    -------
    numpy.ndarray
        Angles in degrees, shape (N,).
    """
    q1 = matrix_to_quaternion(as_rotation_matrices(orientations_1))
    q2 = matrix_to_quaternion(as_rotation_matrices(orientations_2))
    delta = quaternion_multiply(quaternion_conjugate(q1), q2)  # R1ᵀ R2
    if symmetry is None:
        abs_w = np.abs(delta[..., 0])
    else:
        symmetry_q = symmetry.quaternions
        abs_w = np.concatenate([
            np.max(np.abs(quaternion_multiply(delta[start:start + _CHUNK, None, :], symmetry_q[None])[..., 0]), axis=1)
            for start in range(0, len(delta), _CHUNK)
        ]) if len(delta) else np.zeros(0)
    return np.rad2deg(2 * np.arccos(np.clip(abs_w, 0.0, 1.0)))


def to_orix(orientations: ArrayLike, symmetry: PointGroup | None = None) -> Any:
    """Convert stemkit orientations (crystal → lab) to an orix ``Orientation`` (lab → crystal).

    Parameters
    ----------
    orientations
        Quaternions (N, 4) or matrices (N, 3, 3) in the stemkit convention.
    symmetry
        The crystal's point group; its proper rotations become the orix symmetry.

    Returns
    -------
    orix.quaternion.Orientation
        Quaternions ``conj(q)``: orix applies symmetry on the left, ``S⁻¹ R⁻¹ = (R S)⁻¹``.
    """
    from orix.quaternion import Orientation

    q = matrix_to_quaternion(as_rotation_matrices(orientations))
    orientation = Orientation(quaternion_conjugate(q))
    if symmetry is not None:
        orientation.symmetry = symmetry.to_orix()
    return orientation


def from_orix(orientation: Any) -> NDArray[np.float64]:
    """Convert an orix ``Orientation`` or ``Rotation`` (lab → crystal) to stemkit quaternions (N, 4)."""
    data = np.asarray(orientation.data, dtype=float).reshape(-1, 4)
    return _canonical_sign(quaternion_conjugate(data))
