"""Virtual detectors: shapes on the detector plane, in 1/Å, and the images they record.

One function, :func:`virtual_image`, takes any detector: a :class:`Circle`,
:class:`Annulus`, :class:`Rectangle`, a boolean or weighted :class:`Mask`, or the
names ``"bf"`` and ``"adf"``, whose radii follow the direct beam measured in the data.
It is lazy on dask-backed data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from stemkit.data.contract import K_DIMS
from stemkit.data.virtual import annular_mask, apply_detector
from stemkit.preprocess.centering import beam_radius as measure_beam_radius


@dataclass(frozen=True)
class Circle:
    """A disk of ``radius`` (1/Å) around ``center`` = (ky, kx)."""

    radius: float
    center: tuple[float, float] = (0.0, 0.0)

    def mask(self, data: xr.DataArray) -> xr.DataArray:
        """Boolean mask on ``(ky, kx)``."""
        return annular_mask(data, inner=0.0, outer=self.radius, center=self.center)


@dataclass(frozen=True)
class Annulus:
    """A ring ``inner <= |k - center| < outer`` (1/Å)."""

    inner: float
    outer: float
    center: tuple[float, float] = (0.0, 0.0)

    def mask(self, data: xr.DataArray) -> xr.DataArray:
        """Boolean mask on ``(ky, kx)``."""
        return annular_mask(data, inner=self.inner, outer=self.outer, center=self.center)


@dataclass(frozen=True)
class Rectangle:
    """A box ``ky[0] <= ky < ky[1]`` and ``kx[0] <= kx < kx[1]`` (1/Å)."""

    ky: tuple[float, float]
    kx: tuple[float, float]

    def mask(self, data: xr.DataArray) -> xr.DataArray:
        """Boolean mask on ``(ky, kx)``."""
        inside = (data.ky >= self.ky[0]) & (data.ky < self.ky[1]) & (data.kx >= self.kx[0]) & (data.kx < self.kx[1])
        if not bool(inside.any()):
            raise ValueError(f"the rectangle ky={self.ky}, kx={self.kx} (1/Å) covers no detector pixel")
        return inside.drop_vars([c for c in inside.coords if c not in K_DIMS])


@dataclass(frozen=True)
class Mask:
    """Any boolean or weighted detector: an array of the detector's shape ``(ky, kx)``."""

    weights: np.ndarray | xr.DataArray

    def mask(self, data: xr.DataArray) -> xr.DataArray:
        """The weights as a DataArray on ``(ky, kx)``."""
        weights = np.asarray(self.weights)
        shape = (data.sizes["ky"], data.sizes["kx"])
        if weights.shape != shape:
            raise ValueError(f"a detector mask must have the detector's shape {shape}; got {weights.shape}")
        if weights.dtype.kind not in "biuf" or not np.all(np.isfinite(weights)):
            raise ValueError("a detector mask must hold booleans or finite numbers")
        return xr.DataArray(weights, dims=K_DIMS, coords={d: data[d] for d in K_DIMS})


Detector = Circle | Annulus | Rectangle | Mask


def named_detector(name: str, beam_radius: float, k_max: float) -> Detector:
    """``"bf"``: a disk of the direct-beam radius; ``"adf"``: from twice the beam radius to the detector edge."""
    if name == "bf":
        return Circle(radius=beam_radius)
    if name == "adf":
        return Annulus(inner=2.0 * beam_radius, outer=k_max)
    raise ValueError(f"unknown detector name {name!r}; use 'bf', 'adf', or a Circle, Annulus, Rectangle or Mask")


def virtual_image(data: xr.DataArray, detector: Detector | str = "bf", *, beam_radius: float | None = None) -> xr.DataArray:
    """The image a virtual detector records over the scan.

    Parameters
    ----------
    data
        Canonical 4D DataArray (numpy or dask; the result is lazy on dask).
    detector
        A :class:`Circle`, :class:`Annulus`, :class:`Rectangle` or :class:`Mask`, or
        ``"bf"`` / ``"adf"``.
    beam_radius
        Direct-beam radius in 1/Å for the named detectors; measured from the data's
        mean pattern when not given.

    Returns
    -------
    xarray.DataArray
        ``(scan_y, scan_x)`` image; ``attrs["detector"]`` describes the detector.
    """
    if isinstance(detector, str):
        radius = beam_radius if beam_radius is not None else measure_beam_radius(data)
        k_max = float(min(np.abs(data.ky).max(), np.abs(data.kx).max()))
        name, detector = detector, named_detector(detector, radius, k_max)
    else:
        name = type(detector).__name__.lower()
    image = apply_detector(data, detector.mask(data))
    image.attrs["detector"] = f"{name}: {detector!r}" if not isinstance(detector, Mask) else name
    return image
