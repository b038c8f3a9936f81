"""The ``.stem`` accessor: everyday operations on a canonical 4D-STEM DataArray.

Every method works on numpy- and dask-backed data; on dask it builds a lazy
result chunk by chunk and never loads the cube whole (call ``.compute()``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

from stemkit.data.contract import K_DIMS, SCAN_DIMS
from stemkit.data.validate import validate
from stemkit.data.virtual import annular_mask, apply_detector


@xr.register_dataarray_accessor("stem")
class StemAccessor:
    """4D-STEM operations on a DataArray with dims ``(scan_y, scan_x, ky, kx)``."""

    def __init__(self, data: xr.DataArray) -> None:
        self._data = data

    # -- calibrations -------------------------------------------------------------
    @property
    def beam_energy_kev(self) -> float:
        """Accelerating voltage in keV, from ``attrs``."""
        return float(self._data.attrs["beam_energy_kev"])

    @property
    def scan_step_nm(self) -> tuple[float, float]:
        """Probe step (y, x) in nm."""
        return _step(self._data, "scan_y"), _step(self._data, "scan_x")

    @property
    def k_step(self) -> tuple[float, float]:
        """Reciprocal-space pixel size (ky, kx) in 1/Å."""
        return _step(self._data, "ky"), _step(self._data, "kx")

    @property
    def k_origin(self) -> tuple[float, float]:
        """Fractional detector pixel (row, column) where k = 0, the direct beam."""
        return tuple(float(-self._data[d].values[0] / _step(self._data, d)) for d in K_DIMS)  # type: ignore[return-value]

    def validate(self, *, check_values: bool = True) -> xr.DataArray:
        """Check the data contract; see :func:`stemkit.validate`."""
        return validate(self._data, check_values=check_values)

    # -- reductions ---------------------------------------------------------------
    def mean_pattern(self) -> xr.DataArray:
        """Mean diffraction pattern over the scan, dims ``(ky, kx)``."""
        return self._data.mean(SCAN_DIMS, keep_attrs=True).rename("mean_pattern")

    def max_pattern(self) -> xr.DataArray:
        """Pixel-wise maximum over the scan (brings out weak Bragg disks), dims ``(ky, kx)``."""
        return self._data.max(SCAN_DIMS, keep_attrs=True).rename("max_pattern")

    def virtual_image(
        self, *, inner: float = 0.0, outer: float, center: tuple[float, float] = (0.0, 0.0)
    ) -> xr.DataArray:
        """Image from an annular virtual detector.

        Parameters
        ----------
        inner, outer
            Inner and outer radius of the annulus in 1/Å; ``inner=0`` gives a disk
            (bright field when ``outer`` is about the direct-beam radius). A pixel
            counts when its centre lies at ``inner <= |k - center| < outer``.
        center
            Centre of the annulus ``(ky, kx)`` in 1/Å.

        Returns
        -------
        xarray.DataArray
            Summed intensity on ``(scan_y, scan_x)``.
        """
        mask = annular_mask(self._data, inner=inner, outer=outer, center=center)
        image = apply_detector(self._data, mask)
        image.attrs.update(detector="annulus", inner=float(inner), outer=float(outer), center=list(map(float, center)))
        return image

    # -- reshaping ----------------------------------------------------------------
    def crop(
        self,
        *,
        scan_y: slice | None = None,
        scan_x: slice | None = None,
        k_max: float | None = None,
    ) -> xr.DataArray:
        """Crop the scan (by probe index) and/or the detector (to ``|ky|, |kx| <= k_max``).

        Parameters
        ----------
        scan_y, scan_x
            Index slices of probe positions, e.g. ``slice(10, 50)``.
        k_max
            Keep the square window of the detector within ``k_max`` 1/Å of the direct beam.
        """
        data = self._data.isel(scan_y=scan_y or slice(None), scan_x=scan_x or slice(None))
        if k_max is not None:
            if k_max <= 0:
                raise ValueError(f"k_max must be a positive radius in 1/Å; got {k_max!r}.")
            keep = {d: np.flatnonzero(np.abs(data[d].values) <= k_max) for d in K_DIMS}
            if any(idx.size == 0 for idx in keep.values()):
                raise ValueError(f"k_max={k_max} 1/Å keeps no detector pixel; the pixel size is {self.k_step} 1/Å.")
            data = data.isel({d: slice(idx[0], idx[-1] + 1) for d, idx in keep.items()})
        if 0 in data.shape:
            raise ValueError(f"the crop leaves an empty dataset with sizes {dict(data.sizes)}; check the slices.")
        return data

    def bin(self, *, scan: int = 1, k: int = 1, reduce: Literal["sum", "mean"] = "sum") -> xr.DataArray:
        """Bin probe positions and/or detector pixels by integer factors.

        Parameters
        ----------
        scan
            Factor for both scan axes.
        k
            Factor for both detector axes.
        reduce
            ``"sum"`` (keeps counting statistics; default) or ``"mean"``.

        Notes
        -----
        Trailing rows and columns that do not fill a bin are dropped. Coordinates become
        the mean of each bin, so they stay physical (0 is still the direct beam).
        """
        for name, factor in (("scan", scan), ("k", k)):
            if int(factor) != factor or factor < 1:
                raise ValueError(f"{name} must be a positive integer binning factor; got {factor!r}.")
        windows = {d: int(scan) for d in SCAN_DIMS} | {d: int(k) for d in K_DIMS}
        windows = {d: w for d, w in windows.items() if w > 1}
        if not windows:
            return self._data
        too_small = {d: self._data.sizes[d] for d, w in windows.items() if self._data.sizes[d] < w}
        if too_small:
            raise ValueError(f"binning factor larger than the axis: {too_small}; choose a smaller factor.")
        coarse = self._data.coarsen(windows, boundary="trim", coord_func="mean")
        binned = getattr(coarse, reduce)(keep_attrs=True)
        for dim in binned.dims:
            binned[dim].attrs = dict(self._data[dim].attrs)
        return binned


def _step(data: xr.DataArray, dim: str) -> float:
    values = data[dim].values
    return float(values[1] - values[0]) if values.size > 1 else float("nan")
