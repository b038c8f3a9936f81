"""Enumerating a crystal's reflections: every g with 0 < |g| <= k_max and non-negligible |F|."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stemkit.physics.crystal import Crystal

__all__ = ["ReflectionSet", "reflections"]


@dataclass(frozen=True)
class ReflectionSet:
    """The reflections of a crystal within a sphere of reciprocal space, sorted by |g|.

    Attributes
    ----------
    hkl
        Miller indices (n, 3), int.
    g
        Cartesian reciprocal vectors in the crystal frame (n, 3), 1/Å (no 2π).
    structure_factor
        Complex ``F(g)`` (n,) in Å, rest mass (see :meth:`Crystal.structure_factor`).
    k_max
        The radius of the sphere, 1/Å.
    """

    hkl: NDArray[np.int64]
    g: NDArray[np.float64]
    structure_factor: NDArray[np.complex128]
    k_max: float

    def __len__(self) -> int:
        return len(self.hkl)

    @property
    def g_norm(self) -> NDArray[np.float64]:
        """``|g| = 1/d`` in 1/Å, (n,)."""
        return np.linalg.norm(self.g, axis=1)

    @property
    def d_spacing(self) -> NDArray[np.float64]:
        """Interplanar spacings in Å, (n,)."""
        return 1.0 / self.g_norm

    @property
    def intensity(self) -> NDArray[np.float64]:
        """``|F|²`` in Å², (n,)."""
        return np.abs(self.structure_factor) ** 2


def _lattice_points(crystal: Crystal, k_max: float) -> NDArray[np.int64]:
    """All integer hkl (except 000) with |g| <= k_max; l = 0 only for a single layer."""
    # h = g · a, so |h| <= |g| |a|.
    bounds = np.floor(k_max * np.linalg.norm(crystal.direct_basis, axis=0) + 1e-9).astype(int)
    if crystal.is_layer:
        bounds[2] = 0
    axes = [np.arange(-n, n + 1) for n in bounds]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    g_norm = np.linalg.norm(crystal.g_vectors(hkl), axis=1)
    keep = (g_norm > 0) & (g_norm <= k_max * (1 + 1e-12))
    return hkl[keep]


def reflections(crystal: Crystal, k_max: float, *, min_relative_intensity: float = 1e-6) -> ReflectionSet:
    """The reflections of ``crystal`` with ``0 < |g| <= k_max`` and non-negligible ``|F|²``.

    The result is cached on the crystal per ``(k_max, min_relative_intensity)``.

    Parameters
    ----------
    crystal
        The crystal.
    k_max
        Largest ``|g| = 1/d`` in 1/Å (e.g. 2.0 keeps d >= 0.5 Å).
    min_relative_intensity
        Reflections with ``|F|² < min_relative_intensity * max |F|²`` are dropped. The
        default removes systematic absences (numerically ~1e-30) and nothing else.

    Returns
    -------
    ReflectionSet
        Sorted by ``|g|``, then by h, k, l.
    """
    if not k_max > 0:
        raise ValueError(f"k_max must be a positive reciprocal length in 1/Å (e.g. 2.0); got {k_max!r}.")
    key = ("reflections", float(k_max), float(min_relative_intensity))
    cached = crystal._cache.get(key)
    if cached is not None:
        return cached
    hkl = _lattice_points(crystal, k_max)
    if len(hkl) == 0:
        raise ValueError(f"no reflections of {crystal.name or 'the crystal'} lie within k_max = {k_max} 1/Å; "
                         f"the smallest |g| is {1 / np.max(crystal.d_spacing(np.eye(3))):.3f} 1/Å.")
    factor = crystal.structure_factor(hkl)
    intensity = np.abs(factor) ** 2
    keep = intensity >= min_relative_intensity * intensity.max()
    hkl, factor = hkl[keep], factor[keep]
    g = crystal.g_vectors(hkl)
    order = np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0], np.round(np.linalg.norm(g, axis=1), 9)))
    result = ReflectionSet(hkl[order], g[order], factor[order], float(k_max))
    for array in (result.hkl, result.g, result.structure_factor):
        array.flags.writeable = False
    crystal._cache[key] = result
    return result
