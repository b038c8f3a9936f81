"""The classical strain baseline: two reciprocal basis vectors fitted to the Bragg peaks of each pattern.

:class:`LatticeFit` follows the estimator shape of DESIGN.md:

- ``fit(data)`` finds the Bragg peaks of the mean pattern (:func:`stemkit.preprocess.find_peaks`)
  and picks the global basis ``g1, g2``: the shortest reflection nearest the +kx axis,
  then the shortest reflection not parallel to it with ``g1 × g2 > 0``, refined by least
  squares over every indexed peak of the mean pattern;
- ``transform(data)`` finds the peaks of every pattern and fits, all patterns at once,
  ``k ≈ B h + c`` (``B`` the pattern's basis, ``h`` integer indices, ``c`` an origin offset
  that absorbs beam-centring errors). Peaks are indexed by rounding ``B⁻¹ (k − c)``; the
  first pass uses only reflections of order ≤ 2 with a loose tolerance, later passes all
  of them with tighter ones, so false or missing peaks and a few degrees of rotation do
  not mis-index. ``F = (B B_g⁻¹)⁻ᵀ`` is then read off relative to the reference
  (:mod:`stemkit.strain.reference`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xarray as xr

from stemkit.data.contract import SCAN_DIMS
from stemkit.data.validate import validate
from stemkit.preprocess import find_peaks
from stemkit.strain.polar import deformation_from_bases
from stemkit.strain.reference import strain_dataset, strain_fields
from stemkit.strain.symmetry import lattice_symmetry_order

PASSES = ((2, 0.3), (None, 0.15), (None, 0.1), (None, 0.1))  # (max order or None, tolerance in |g_min|)
MIN_PEAKS = 3


class NotFittedError(RuntimeError):
    """``transform`` was called before ``fit``."""


class LatticeFit:
    """Strain and rotation maps from two basis vectors fitted to the Bragg peaks of every pattern.

    Parameters
    ----------
    reference
        ``"auto"`` (the most uniform region, :mod:`stemkit.strain.reference`) or a boolean
        map of the scan whose median lattice is the reference.
    threshold
        Peak-detection threshold in standard deviations (:func:`~stemkit.preprocess.find_peaks`).
    noise
        ``"poisson"`` for data in counts, ``"uniform"`` otherwise (see ``find_peaks``).
    max_peaks
        Peaks kept per pattern.
    device
        Torch device of the peak finder.

    Attributes
    ----------
    basis_
        ``(2, 2)`` global reciprocal basis (columns ``g1, g2`` as ``(kx, ky)``, 1/Å).
    symmetry_order_
        Rotational order of the lattice (6 for hexagonal), from ``basis_``.
    """

    def __init__(self, *, reference: Any = "auto", threshold: float = 5.0,
                 noise: Literal["poisson", "uniform"] = "poisson", max_peaks: int = 64,
                 device: str = "cpu") -> None:
        self.reference = reference
        self.threshold = threshold
        self.noise = noise
        self.max_peaks = max_peaks
        self.device = device

    def fit(self, data: xr.DataArray) -> "LatticeFit":
        """Find the global reciprocal basis from the mean pattern of ``data``."""
        validate(data, check_values=False)
        mean = data.stem.mean_pattern().expand_dims(scan_y=[0.0], scan_x=[0.0])
        mean = mean.transpose(*SCAN_DIMS, "ky", "kx").rename("intensity")
        mean.attrs = dict(data.attrs)
        peaks = find_peaks(mean, threshold=self.threshold, noise="uniform", max_peaks=self.max_peaks,
                           device=self.device)
        k = _peak_vectors(peaks)[0, 0]
        k = k[np.isfinite(k[:, 0])]
        self.basis_ = choose_basis(k)
        refined = fit_bases(k[None], np.isfinite(k[None, :, 0]), self.basis_)[0][0]
        if np.all(np.isfinite(refined)):
            self.basis_ = refined
        self.symmetry_order_ = lattice_symmetry_order(self.basis_)
        return self

    def transform(self, data: xr.DataArray, peaks: xr.Dataset | None = None) -> xr.Dataset:
        """Strain and rotation of every pattern.

        Parameters
        ----------
        data
            Canonical 4D DataArray (numpy or dask).
        peaks
            Bragg peaks of ``data`` already found with ``find_peaks``; found here if None.

        Returns
        -------
        xarray.Dataset
            On ``(scan_y, scan_x)``: ``exx``, ``eyy``, ``exy``, ``rotation`` (degrees), ``reference``
            (the map used), ``base`` (0: one lattice), ``n_indexed`` and ``residual`` (RMS, 1/Å).
        """
        if not hasattr(self, "basis_"):
            raise NotFittedError("this LatticeFit is not fitted yet: call .fit(data) before .transform(data).")
        validate(data, check_values=False)
        if peaks is None:
            peaks = find_peaks(data, threshold=self.threshold, noise=self.noise, max_peaks=self.max_peaks,
                               device=self.device)
        k = _peak_vectors(peaks)
        scan_shape = k.shape[:2]
        flat = k.reshape(-1, k.shape[2], 2)
        bases, n_used, residual = fit_bases(flat, np.isfinite(flat[..., 0]), self.basis_)
        deformation = deformation_from_bases(bases, self.basis_).reshape(*scan_shape, 2, 2)
        groups = np.zeros(scan_shape, np.int64)
        fields, mask = strain_fields(deformation, groups, self.reference, self.symmetry_order_)
        coords = {d: data[d] for d in SCAN_DIMS}
        attrs = {"method": "stemkit.strain.LatticeFit", "basis": self.basis_.tolist(),
                 "symmetry_order": self.symmetry_order_,
                 "reference_rule": "given map" if not isinstance(self.reference, str) else "auto",
                 "threshold_sigma": float(self.threshold), "noise": self.noise}
        extra = {
            "base": (SCAN_DIMS, groups),
            "n_indexed": (SCAN_DIMS, n_used.reshape(scan_shape)),
            "residual": (SCAN_DIMS, residual.reshape(scan_shape), {"units": "1/Å"}),
        }
        return strain_dataset(fields, mask, coords, attrs, extra)


def _peak_vectors(peaks: xr.Dataset) -> np.ndarray:
    """``(n_y, n_x, P, 2)`` peak vectors ``(kx, ky)``, NaN where not valid."""
    k = np.stack([peaks["kx"].values, peaks["ky"].values], axis=-1).astype(np.float64)
    return np.where(peaks["valid"].values[..., None], k, np.nan)


def choose_basis(k: np.ndarray) -> np.ndarray:
    """The reduced basis of a set of reciprocal-lattice vectors (direct beam included or not).

    ``g1`` is the shortest vector (within 15 %) closest in angle to +kx; ``g2`` the shortest
    with ``g1 × g2 > 0`` and at least 20° from ``g1``, the smaller angle to ``g1`` breaking ties.
    """
    k = np.asarray(k, dtype=float)
    length = np.hypot(k[:, 0], k[:, 1])
    k, length = k[length > 0.05 * length.max()], length[length > 0.05 * length.max()]
    if len(k) < 2:
        raise ValueError(
            f"the mean pattern shows {len(k)} Bragg reflection(s) besides the direct beam; at least two non-parallel "
            "ones are needed. Lower `threshold`, or check that the data are centred (k = 0 at the direct beam)."
        )
    short = length < 1.15 * length.min()
    angle = np.arctan2(k[:, 1], k[:, 0])
    g1 = k[short][np.argmin(np.abs(angle[short]))]
    cross = g1[0] * k[:, 1] - g1[1] * k[:, 0]
    away = cross > np.sin(np.deg2rad(20.0)) * length * np.linalg.norm(g1)
    if not away.any():
        raise ValueError("all Bragg reflections of the mean pattern lie on one line; a 2-D lattice is needed.")
    candidates = np.flatnonzero(away)
    shortest = length[candidates].min()
    candidates = candidates[length[candidates] < 1.15 * shortest]
    between = np.abs(np.angle(np.exp(1j * (angle[candidates] - np.arctan2(g1[1], g1[0])))))
    g2 = k[candidates[np.argmin(between)]]
    return np.stack([g1, g2], axis=1)


def fit_bases(k: np.ndarray, valid: np.ndarray, basis: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares bases ``B`` and offsets of ``k ≈ B h + c`` for many patterns at once.

    Parameters
    ----------
    k
        ``(n, P, 2)`` peak vectors ``(kx, ky)``.
    valid
        ``(n, P)`` which peaks exist.
    basis
        ``(2, 2)`` starting basis (columns), shared by all patterns.

    Returns
    -------
    bases, n_used, residual
        ``(n, 2, 2)`` fitted bases (NaN where fewer than 3 peaks were indexed), the number
        of peaks used and their RMS residual (1/Å).
    """
    n = len(k)
    g_min = float(np.min(np.linalg.norm(basis, axis=0)))
    bases = np.broadcast_to(basis, (n, 2, 2)).copy()
    offset = np.zeros((n, 2))
    k = np.where(valid[..., None], k, 0.0)
    for max_order, tolerance in PASSES:
        index, use = _index(k, valid, bases, offset, max_order, tolerance * g_min)
        bases, offset, ok = _solve(k, index, use)
        good = ok & np.all(np.isfinite(bases), axis=(1, 2))
        bases = np.where(good[:, None, None], bases, np.broadcast_to(basis, (n, 2, 2)))
        offset = np.where(good[:, None], offset, 0.0)
    index, use = _index(k, valid, bases, offset, None, PASSES[-1][1] * g_min)
    residual = k - np.einsum("nij,npj->npi", bases, index) - offset[:, None]
    n_used = use.sum(axis=1)
    rms = np.sqrt(np.where(use, (residual**2).sum(-1), 0.0).sum(1) / np.maximum(n_used, 1))
    bad = ~good | (n_used < MIN_PEAKS)
    bases[bad] = np.nan
    return bases, n_used, np.where(bad, np.nan, rms)


def _index(k, valid, bases, offset, max_order, tolerance):
    """Integer indices of each peak under each pattern's basis, and which peaks to use."""
    inverse = np.linalg.inv(bases)
    h = np.einsum("nij,npj->npi", inverse, k - offset[:, None])
    index = np.round(h)
    distance = np.linalg.norm(k - np.einsum("nij,npj->npi", bases, index) - offset[:, None], axis=-1)
    use = valid & (distance < tolerance)
    if max_order is not None:
        use &= np.abs(index).max(-1) <= max_order
    return index, use


def _solve(k, index, use):
    """Per-pattern least squares of ``k = B h + c`` over the used peaks; ``ok`` where it is determined."""
    design = np.concatenate([index, np.ones(index.shape[:2] + (1,))], axis=-1) * use[..., None]
    normal = np.einsum("npi,npj->nij", design, design)
    rhs = np.einsum("npi,npj->nij", design, k * use[..., None])
    # determined when the indices span 2-D and at least 3 peaks are used
    ok = (use.sum(1) >= MIN_PEAKS) & (np.abs(np.linalg.det(normal[:, :2, :2])) > 1e-9)
    normal[~ok] = np.eye(3)
    beta = np.linalg.solve(normal, rhs)  # (n, 3, 2): rows hx, hy, 1
    return np.swapaxes(beta[:, :2], 1, 2), beta[:, 2], ok
