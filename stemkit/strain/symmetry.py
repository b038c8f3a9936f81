"""The rotational symmetry of a 2-D lattice or pattern, and rotations unwrapped by it.

A lattice with an ``n``-fold rotation axis along the beam looks the same turned by
``360°/n``; a method that measures rotation from the lattice alone (which basis vectors,
which learned base orientation) can land on any of these ``n`` branches. stemkit finds
``n`` from the data — from the reference basis for the lattice fit, from the learned base
pattern for the CC-ST-AE — and brings every measurement to one branch, so no hand-set
rotation offset is ever needed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from stemkit.strain.polar import rotation_matrix

ORDERS = (6, 4, 3, 2)
INTEGER_TOLERANCE = 0.12
PATTERN_CORRELATION = 0.6


def lattice_symmetry_order(basis: ArrayLike, tolerance: float = INTEGER_TOLERANCE) -> int:
    """The highest rotational order (6, 4 or 2) of the 2-D lattice spanned by a basis.

    A rotation by ``360°/n`` is a symmetry when it maps the basis onto lattice vectors:
    ``B⁻¹ R B`` is an integer matrix within ``tolerance`` (which absorbs a few percent of
    strain of the measured lattice). Every 2-D lattice is 2-fold.

    Parameters
    ----------
    basis
        ``(2, 2)``, columns the two basis vectors (reciprocal or real, either works).

    Examples
    --------
    >>> hexagonal = np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]])
    >>> lattice_symmetry_order(hexagonal), lattice_symmetry_order(np.diag([1.0, 1.3]))
    (6, 2)
    """
    b = np.asarray(basis, dtype=float)
    if b.shape != (2, 2) or not np.all(np.isfinite(b)) or abs(np.linalg.det(b)) < 1e-12:
        raise ValueError(f"basis must be a finite, non-singular 2×2 matrix (columns the vectors); got {b!r}.")
    for order in (6, 4):
        m = np.linalg.solve(b, rotation_matrix(360.0 / order) @ b)
        if np.max(np.abs(m - np.round(m))) < tolerance:
            return order
    return 2


def pattern_symmetry_order(pattern: ArrayLike, mask: ArrayLike | None = None,
                           threshold: float = PATTERN_CORRELATION) -> int:
    """The highest rotational order (6, 4, 3 or 2) under which a centred pattern looks the same.

    The pattern (its centre pixel the rotation centre) is blurred by 1.5 px, turned by
    ``360°/n`` and compared with itself by the normalised correlation over ``mask``; the
    largest ``n`` whose correlation reaches ``threshold`` wins; 1 if none does.

    Parameters
    ----------
    pattern
        ``(ny, nx)`` image, the direct beam at ``(ny // 2, nx // 2)``, background removed.
    mask
        Pixels to compare (e.g. the annulus of Bragg disks); default all.
    """
    image = ndimage.gaussian_filter(np.asarray(pattern, dtype=float), 1.5)
    keep = np.ones(image.shape, bool) if mask is None else np.asarray(mask, bool)
    centre = np.array([image.shape[0] // 2, image.shape[1] // 2], dtype=float)
    for order in ORDERS:
        turned = _rotate_about(image, 360.0 / order, centre)
        if _correlation(image[keep], turned[keep]) >= threshold:
            return order
    return 1


def _rotate_about(image: np.ndarray, angle_deg: float, centre: np.ndarray) -> np.ndarray:
    """The image turned by ``angle_deg`` about ``centre`` (row, col), +x (cols) towards +y (rows)."""
    r = rotation_matrix(-angle_deg)  # output (x, y) samples the input at R⁻¹ (x, y)
    matrix = r[::-1, ::-1]  # (x, y) → (row, col) order
    return ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre, order=1)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def wrap_rotation(angle_deg: ArrayLike, order: int) -> np.ndarray:
    """Angles brought into ``(−180°/n, 180°/n]`` by multiples of ``360°/n``.

    Examples
    --------
    >>> wrap_rotation([59.0, -31.0, 3.0], 6).tolist()
    [-1.0, 29.0, 3.0]
    """
    if order < 1:
        raise ValueError(f"order must be a positive integer; got {order!r}.")
    period = 360.0 / order
    angle = np.asarray(angle_deg, dtype=float)
    return -((-angle + period / 2) % period - period / 2)


def align_branch(deformation: ArrayLike, order: int, target_deg: float) -> np.ndarray:
    """Deformations ``F R(−k·360°/n)`` whose rotation lies within ``180°/n`` of ``target_deg``.

    A measurement on another symmetry branch is ``F Q`` with ``Q`` a lattice rotation;
    right-multiplying by ``Q⁻¹`` restores ``F`` (``V`` is unchanged, only ``R`` turns).
    """
    f = np.asarray(deformation, dtype=float)
    angle = np.rad2deg(np.arctan2(f[..., 1, 0] - f[..., 0, 1], f[..., 0, 0] + f[..., 1, 1]))
    period = 360.0 / order
    turns = np.round((angle - target_deg) / period)
    turns = np.where(np.isfinite(turns), turns, 0.0)
    return f @ rotation_matrix(-turns * period)


def branch_centre(deformation: ArrayLike, order: int) -> float:
    """The circular mean rotation (degrees) of finite deformations, modulo ``360°/n``."""
    f = np.asarray(deformation, dtype=float).reshape(-1, 2, 2)
    angle = np.arctan2(f[:, 1, 0] - f[:, 0, 1], f[:, 0, 0] + f[:, 1, 1])
    angle = angle[np.isfinite(angle)]
    if angle.size == 0:
        return 0.0
    mean = np.angle(np.exp(1j * order * angle).mean())
    return float(np.rad2deg(mean) / order)
