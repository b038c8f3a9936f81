"""Strain and rotation read off 2×2 maps by the left polar decomposition (DESIGN.md).

Every strain method in :mod:`stemkit.strain` ends in a field of deformation gradients
``F`` (``a' = F a`` for real-space lattice vectors, ``g' = F⁻ᵀ g`` for reciprocal ones).
A method that measures how the *reciprocal* lattice moved — fitted basis vectors, or an
affine warp of a diffraction pattern — has the reciprocal map ``T`` with ``g' = T g``, so
``F = T⁻ᵀ``. Relative to a reference lattice whose deformation is ``F_ref``, the lattice
is deformed by ``F F_ref⁻¹``. Finally ``F = V R`` gives ``exx, eyy, exy`` (components of
``V − I``, tensor shear) and ``rotation`` (angle of ``R``, degrees, +x towards +y).

Unlike :func:`stemkit.physics.specimens.strain_from_deformation`, which refuses bad
input, these functions work on maps: a non-finite or inverting ``F`` gives NaN there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _matrices(value: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.ndim < 2 or array.shape[-2:] != (2, 2):
        raise ValueError(f"{name} must be 2×2 matrices with shape (..., 2, 2); got shape {array.shape}.")
    return array


def rotation_matrix(angle_deg: ArrayLike) -> np.ndarray:
    """Rotation matrices ``(..., 2, 2)`` by ``angle_deg`` degrees, +x towards +y."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=float))
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def inverse_transpose(matrices: ArrayLike) -> np.ndarray:
    """``M⁻ᵀ`` of each 2×2 matrix, NaN where ``M`` is singular or not finite."""
    m = _matrices(matrices, "matrices")
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_det = np.where(np.abs(det) > 0, 1.0 / det, np.nan)
    out = np.empty_like(m)
    out[..., 0, 0] = m[..., 1, 1] * inv_det
    out[..., 0, 1] = -m[..., 1, 0] * inv_det
    out[..., 1, 0] = -m[..., 0, 1] * inv_det
    out[..., 1, 1] = m[..., 0, 0] * inv_det
    return out


def deformation_from_reciprocal(reciprocal_map: ArrayLike) -> np.ndarray:
    """Deformation gradients ``F = T⁻ᵀ`` of reciprocal maps ``T`` (``g' = T g``).

    Examples
    --------
    >>> T = np.diag([1 / 1.02, 1.0])  # reciprocal vectors along x shrink by 1.02
    >>> np.round(deformation_from_reciprocal(T), 6).tolist()
    [[1.02, 0.0], [0.0, 1.0]]
    """
    return inverse_transpose(reciprocal_map)


def deformation_from_bases(bases: ArrayLike, reference_basis: ArrayLike) -> np.ndarray:
    """Deformation gradients of measured reciprocal bases relative to a reference basis.

    Parameters
    ----------
    bases
        ``(..., 2, 2)``: columns are the reciprocal basis vectors ``g1, g2`` as ``(kx, ky)``.
    reference_basis
        ``(2, 2)`` or broadcastable: the same vectors of the reference lattice.

    Returns
    -------
    numpy.ndarray
        ``F = (B B_ref⁻¹)⁻ᵀ``.
    """
    b = _matrices(bases, "bases")
    ref = _matrices(reference_basis, "reference_basis")
    return inverse_transpose(b @ np.linalg.inv(ref))


def relative_deformation(deformation: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """``F F_ref⁻¹``: the deformation of a lattice relative to the reference lattice ``F_ref``."""
    f = _matrices(deformation, "deformation")
    ref = _matrices(reference, "reference")
    return f @ np.swapaxes(inverse_transpose(ref), -1, -2)


def polar_strain(deformation: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``exx, eyy, exy, rotation`` of deformation gradients by the left polar decomposition ``F = V R``.

    The closed form in 2-D: the angle of ``R`` is ``atan2(F₁₀ − F₀₁, F₀₀ + F₁₁)`` and
    ``V = F Rᵀ`` (symmetric when ``F`` has a positive determinant).

    Parameters
    ----------
    deformation
        ``(..., 2, 2)`` acting on real-space ``(x, y)``.

    Returns
    -------
    exx, eyy, exy, rotation
        Components of ``V − I`` (tensor shear) and the rotation in degrees (+x towards +y),
        NaN where ``F`` is not finite or has a determinant ≤ 0.

    Examples
    --------
    >>> [float(np.round(v, 6)) for v in polar_strain(rotation_matrix(5.0))]
    [0.0, 0.0, 0.0, 5.0]
    """
    f = _matrices(deformation, "deformation")
    det = f[..., 0, 0] * f[..., 1, 1] - f[..., 0, 1] * f[..., 1, 0]
    bad = ~(np.isfinite(det) & (det > 0))
    angle = np.arctan2(f[..., 1, 0] - f[..., 0, 1], f[..., 0, 0] + f[..., 1, 1])
    stretch = f @ np.swapaxes(rotation_matrix(np.rad2deg(angle)), -1, -2)
    values = (stretch[..., 0, 0] - 1.0, stretch[..., 1, 1] - 1.0,
              0.5 * (stretch[..., 0, 1] + stretch[..., 1, 0]), np.rad2deg(angle))
    return tuple(np.where(bad, np.nan, v) for v in values)  # type: ignore[return-value]
