"""Build the canonical 4D-STEM DataArray from an array and its calibrations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from stemkit.data.contract import DIMS, LONG_NAMES, UNITS

Pair = float | tuple[float, float]


def as_pair(value: Pair, name: str) -> tuple[float, float]:
    """Return ``value`` as a (y, x) pair of finite floats.

    Parameters
    ----------
    value
        A scalar (used for both axes) or a (y, x) pair.
    name
        The argument's name, used in error messages.
    """
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.shape == (1,):
        arr = np.repeat(arr, 2)
    if arr.shape != (2,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a finite number or a (y, x) pair of numbers; got {value!r}.")
    return float(arr[0]), float(arr[1])


def axis_coordinate(n: int, step: float, origin: float, dim: str) -> xr.Variable:
    """Return a uniform coordinate ``(index - origin) * step`` with units and a long name."""
    values = (np.arange(n, dtype=float) - origin) * step
    return xr.Variable(dim, values, attrs={"units": UNITS[dim], "long_name": LONG_NAMES[dim]})


def datacube(
    array: Any,
    *,
    scan_step_nm: Pair = 1.0,
    k_step: Pair,
    beam_energy_kev: float,
    k_origin: tuple[float, float] | None = None,
    name: str = "intensity",
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Build the canonical 4D-STEM DataArray.

    Parameters
    ----------
    array
        Intensities with axes ``(scan_y, scan_x, ky, kx)``: a numpy array, a dask array,
        or anything ``numpy.asarray`` accepts. A dask array stays lazy; it should be
        chunked over the scan axes only (whole patterns per chunk) and is rechunked
        to that if not.
    scan_step_nm
        Probe step in nm, a scalar or a (y, x) pair. Must be positive.
    k_step
        Reciprocal-space pixel size in 1/Å, a scalar or a (ky, kx) pair. Must be positive.
    beam_energy_kev
        Accelerating voltage in keV (e.g. 200 or 300).
    k_origin
        Detector pixel ``(row, column)`` of the direct beam, possibly fractional; the
        ``ky``/``kx`` coordinates are 0 there. Default: the detector centre
        ``(n_ky // 2, n_kx // 2)``, which puts 0 on a pixel as an FFT-centred image does.
    name
        The DataArray's name.
    attrs
        Extra attributes (``convergence_mrad``, ``source``, ...) to store.

    Returns
    -------
    xarray.DataArray
        Dims ``("scan_y", "scan_x", "ky", "kx")`` with coordinates in nm and 1/Å and
        ``attrs["beam_energy_kev"]``.

    Examples
    --------
    >>> import numpy as np, stemkit
    >>> cube = stemkit.datacube(np.ones((4, 5, 32, 32)), k_step=0.02, beam_energy_kev=300)
    >>> cube.dims
    ('scan_y', 'scan_x', 'ky', 'kx')
    >>> float(cube.kx[16])
    0.0
    """
    data = array if _is_dask(array) else np.asarray(array)
    if data.ndim != 4:
        raise ValueError(
            f"a 4D-STEM array needs 4 axes (scan_y, scan_x, ky, kx); got shape {tuple(data.shape)}. "
            "Reshape a flat scan with array.reshape(n_y, n_x, ky, kx) first."
        )
    sy, sx = as_pair(scan_step_nm, "scan_step_nm")
    ky_step, kx_step = as_pair(k_step, "k_step")
    if min(sy, sx, ky_step, kx_step) <= 0:
        raise ValueError(f"steps must be positive; got scan_step_nm={scan_step_nm!r}, k_step={k_step!r}.")
    energy = float(beam_energy_kev)
    if not np.isfinite(energy) or energy <= 0:
        raise ValueError(f"beam_energy_kev must be a positive number of keV (e.g. 300); got {beam_energy_kev!r}.")
    n_y, n_x, n_ky, n_kx = data.shape
    oy, ox = (n_ky // 2, n_kx // 2) if k_origin is None else as_pair(k_origin, "k_origin")
    if _is_dask(data):
        data = data.rechunk({2: -1, 3: -1})
    coords = {
        "scan_y": axis_coordinate(n_y, sy, 0.0, "scan_y"),
        "scan_x": axis_coordinate(n_x, sx, 0.0, "scan_x"),
        "ky": axis_coordinate(n_ky, ky_step, oy, "ky"),
        "kx": axis_coordinate(n_kx, kx_step, ox, "kx"),
    }
    all_attrs = {"beam_energy_kev": energy, "long_name": "intensity", "units": "counts"}
    all_attrs.update(attrs or {})
    return xr.DataArray(data, dims=DIMS, coords=coords, name=name, attrs=all_attrs)


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.")
