"""Check a DataArray against the data contract and say what is wrong and how to fix it."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from stemkit.data.contract import DIMS, K_DIMS, SCAN_DIMS, ContractError

UNIT_SYNONYMS: dict[str, set[str]] = {
    "nm": {"nm", "nanometer", "nanometre", "nanometers", "nanometres"},
    "1/Å": {"1/Å", "1/A", "Å⁻¹", "Å^-1", "A^-1", "1/angstrom", "1 / Å", "1/Angstrom"},
}
EXPECTED_UNITS = {"scan_y": "nm", "scan_x": "nm", "ky": "1/Å", "kx": "1/Å"}
STEP_RTOL = 1e-5
NEGATIVE_SIGMA_LIMIT = 8.0


def validate(data: Any, *, check_values: bool = True) -> xr.DataArray:
    """Check that ``data`` follows the stemkit data contract.

    Parameters
    ----------
    data
        The object to check; it should be an ``xarray.DataArray``.
    check_values
        Also check the intensities: no NaN or infinity, and no negative counts beyond
        noise. On dask-backed data this is one streaming pass over the chunks (bounded
        memory, but it reads the whole dataset); pass ``False`` to check only the
        structure.

    Returns
    -------
    xarray.DataArray
        ``data`` itself, unchanged, so that calls can be chained.

    Raises
    ------
    ContractError
        Listing every problem found and how to fix each.

    Notes
    -----
    Negative values are accepted as noise (e.g. after dark-reference subtraction, when
    about half the background pixels are negative) as long as the mean intensity is
    positive and no value lies more than 8 times the root-mean-square of the negative
    values below zero.
    """
    if not isinstance(data, xr.DataArray):
        raise ContractError(
            [f"expected an xarray.DataArray, got {type(data).__name__}; build one with stemkit.datacube(array, k_step=..., beam_energy_kev=...)"]
        )
    problems = _dim_problems(data)
    if not problems:
        problems += _coordinate_problems(data)
    problems += _dtype_problems(data) + _attr_problems(data) + _chunk_problems(data)
    if check_values and not problems:
        problems += _value_problems(data)
    if problems:
        raise ContractError(problems, what=f"DataArray {data.name!r}")
    return data


def _dim_problems(data: xr.DataArray) -> list[str]:
    if data.dims == DIMS:
        return [] if all(data.sizes[d] > 0 for d in DIMS) else [
            f"every axis needs at least one element; got sizes {dict(data.sizes)}"
        ]
    if set(data.dims) == set(DIMS):
        return [f"dims are in the order {data.dims}; reorder with data.transpose{DIMS}"]
    return [
        f"dims must be {DIMS}, got {data.dims}; rename with data.rename(...) or rebuild with stemkit.datacube(...)"
    ]


def _coordinate_problems(data: xr.DataArray) -> list[str]:
    problems = []
    for dim in DIMS:
        if dim not in data.coords:
            problems.append(f"no coordinate for {dim!r}; assign one in {EXPECTED_UNITS[dim]} or rebuild with stemkit.datacube(...)")
            continue
        coord = data.coords[dim]
        problems += _step_problems(dim, np.asarray(coord.values))
        units = coord.attrs.get("units")
        if units not in UNIT_SYNONYMS[EXPECTED_UNITS[dim]]:
            problems.append(
                f"coordinate {dim!r} has units {units!r}, expected {EXPECTED_UNITS[dim]!r}; "
                f"convert the values and set data[{dim!r}].attrs['units'] = {EXPECTED_UNITS[dim]!r}"
            )
    for dim in K_DIMS:
        if dim in data.coords and data.sizes[dim] > 1:
            values = np.asarray(data.coords[dim].values, dtype=float)
            if np.all(np.isfinite(values)) and not values.min() <= 0 <= values.max():
                problems.append(
                    f"coordinate {dim!r} runs from {values.min():.4g} to {values.max():.4g} 1/Å and never "
                    "reaches 0, but 0 must be the direct beam; pass k_origin to stemkit.datacube or centre the data"
                )
    return problems


def _step_problems(dim: str, values: np.ndarray) -> list[str]:
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        return [f"coordinate {dim!r} must be a 1-D numeric array; got dtype {values.dtype} with shape {values.shape}"]
    if not np.all(np.isfinite(values)):
        return [f"coordinate {dim!r} contains NaN or infinity; give finite calibrated positions"]
    if values.size < 2:
        return []
    steps = np.diff(values.astype(float))
    if np.any(steps <= 0):
        return [f"coordinate {dim!r} must increase strictly; flip the axis with data.isel({dim}=slice(None, None, -1)) and negate the coordinate"]
    if np.ptp(steps) > STEP_RTOL * abs(steps.mean()):
        return [
            f"coordinate {dim!r} has non-uniform steps (from {steps.min():.6g} to {steps.max():.6g}); "
            "resample onto a uniform grid or rebuild with stemkit.datacube(...)"
        ]
    return []


def _dtype_problems(data: xr.DataArray) -> list[str]:
    kind = np.dtype(data.dtype).kind
    if kind in "iuf":
        return []
    return [f"intensities must be real numbers (int, uint or float); got dtype {data.dtype}; convert with data.astype('float32')"]


def _attr_problems(data: xr.DataArray) -> list[str]:
    energy = data.attrs.get("beam_energy_kev")
    try:
        ok = energy is not None and np.isfinite(float(energy)) and float(energy) > 0
    except (TypeError, ValueError):
        ok = False
    if ok:
        return []
    return [
        f"attrs['beam_energy_kev'] is {energy!r}; set the accelerating voltage, e.g. data.attrs['beam_energy_kev'] = 300.0, "
        "or pass beam_energy_kev= to stemkit.load / stemkit.datacube"
    ]


def _chunk_problems(data: xr.DataArray) -> list[str]:
    chunks = data.chunks
    if chunks is None:
        return []
    split = [d for d, c in zip(data.dims, chunks) if d in K_DIMS and len(c) > 1]
    if not split:
        return []
    return [f"dask chunks split the patterns along {split}; keep whole patterns per chunk with data.chunk({{'ky': -1, 'kx': -1}})"]


def _value_problems(data: xr.DataArray) -> list[str]:
    kind = np.dtype(data.dtype).kind
    values = data.data
    if kind == "u":
        return []
    if kind == "f":
        n_bad = int(_compute((~np.isfinite(values)).sum()))
        if n_bad:
            return [
                f"{n_bad} intensities are NaN or infinite; replace them (e.g. data.fillna(0), or mask dead pixels) before analysis"
            ]
    negative = values < 0
    n_negative = int(_compute(negative.sum()))
    if n_negative == 0:
        return []
    mean = float(_compute(values.mean(dtype="float64")))
    if mean <= 0:
        return [
            f"the mean intensity is {mean:.4g}, not positive ({n_negative} values are negative); the dark reference "
            "or offset looks wrong: subtract a smaller offset, or clip with data.clip(min=0)"
        ]
    squares = (values.astype("float64") ** 2) * negative
    rms = float(np.sqrt(_compute(squares.sum()) / n_negative))
    lowest = float(_compute(values.min()))
    if lowest < -NEGATIVE_SIGMA_LIMIT * rms:
        return [
            f"the lowest intensity {lowest:.4g} is far below the noise of the negative values (rms {rms:.3g}); "
            "look for dead or mis-corrected pixels and clip them with data.clip(min=0)"
        ]
    return []


def _compute(value: Any) -> Any:
    return value.compute() if hasattr(value, "compute") else value
