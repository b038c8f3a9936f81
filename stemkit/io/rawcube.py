"""What a format reader hands back before calibrations are completed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from stemkit.data.datacube import datacube
from stemkit.io.errors import MissingCalibrationError

Pair = tuple[float, float]


@dataclass
class RawCube:
    """A 4D array as a reader found it, with whatever calibrations the file holds.

    Attributes
    ----------
    array
        Intensities ``(scan_y, scan_x, ky, kx)``, or a flat stack ``(n, ky, kx)`` when the
        file does not record the scan shape; numpy or dask (whole patterns per chunk).
    scan_step_nm, k_step, beam_energy_kev, k_origin
        Calibrations read from the file, or ``None`` where the file has none.
        ``k_step`` is in 1/Å, ``k_origin`` a detector pixel (row, column).
    attrs
        Metadata worth keeping (``source``, ``format``, detector settings ...): values
        must be str, int, float, bool or lists of them, so that they save to netCDF.
    """

    array: Any
    scan_step_nm: Pair | None = None
    k_step: Pair | None = None
    beam_energy_kev: float | None = None
    k_origin: Pair | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_datacube(
        self,
        path: str,
        *,
        beam_energy_kev: float | None = None,
        k_step: float | Pair | None = None,
        scan_step_nm: float | Pair | None = None,
        k_origin: Pair | None = None,
        scan_shape: tuple[int, int] | None = None,
    ) -> xr.DataArray:
        """Complete the calibrations (arguments override the file) and build the DataArray.

        Raises
        ------
        MissingCalibrationError
            When neither the file nor the arguments give the beam energy, the detector
            step, or (for a flat stack of patterns) the scan shape.
        """
        array = self._scan_shaped(path, scan_shape)
        energy = beam_energy_kev if beam_energy_kev is not None else self.beam_energy_kev
        step = k_step if k_step is not None else self.k_step
        missing = {}
        if energy is None:
            missing["beam_energy_kev=<keV>"] = "the beam energy"
        if step is None:
            missing["k_step=<1/Å per pixel>"] = "the detector (reciprocal-space) pixel size"
        if array is None:
            missing["scan_shape=(n_y, n_x)"] = f"the scan shape of this flat stack of {self.array.shape[0]} patterns"
        if missing:
            raise MissingCalibrationError(path, missing)
        scan = scan_step_nm if scan_step_nm is not None else self.scan_step_nm
        attrs = dict(self.attrs)
        if scan is None:
            attrs["scan_step_uncalibrated"] = True
        return datacube(
            array,
            scan_step_nm=1.0 if scan is None else scan,
            k_step=step,
            beam_energy_kev=energy,
            k_origin=k_origin if k_origin is not None else self.k_origin,
            attrs=attrs,
        )

    def _scan_shaped(self, path: str, scan_shape: tuple[int, int] | None) -> Any:
        """The array as ``(scan_y, scan_x, ky, kx)``, or ``None`` for a flat stack with no shape given."""
        array = self.array
        if scan_shape is None:
            return None if array.ndim == 3 else array
        n_y, n_x = (int(n) for n in scan_shape)
        n_patterns = int(np.prod(array.shape[:-2]))
        if n_y * n_x != n_patterns:
            raise ValueError(
                f"scan_shape={tuple(scan_shape)} holds {n_y * n_x} patterns but {path} has {n_patterns} "
                f"(array shape {tuple(array.shape)}); choose a shape whose product is {n_patterns}"
            )
        return array.reshape(n_y, n_x, *array.shape[-2:])
