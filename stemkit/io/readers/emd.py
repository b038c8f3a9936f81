"""EMD 1.0 HDF5 files: py4DSTEM / emdfile ``.h5`` and NCEM-style ``.emd`` (e.g. Prismatic).

Layout (EMD 1.0, https://emdatasets.com): groups carry an ``emd_group_type`` attribute;
a data group (``emd_group_type`` 1, or ``"array"`` in emdfile) holds the N-D dataset
(``data``; Prismatic names it ``datacube``) and one dim vector per axis with ``name`` and
``units`` attributes: ``dim1``...``dimN`` in EMD 1.0, ``dim0``...``dim{N-1}`` in emdfile.
A dim vector is either the full coordinate list or, in emdfile, just its first two
values (start, start + step). py4DSTEM adds a ``metadatabundle/calibration`` group with
``R_pixel_size``/``R_pixel_units`` and ``Q_pixel_size``/``Q_pixel_units``.

Axis mapping: py4DSTEM's ``(Rx, Ry, Qx, Qy)`` has ``Rx`` and ``Qx`` as the first (row)
axis of the scan and of each pattern, so the array is ``(scan_y, scan_x, ky, kx)`` as
stored, with no transpose or flip. A 3D dataset is a flat stack of patterns.

Calibrations: probe and detector steps from the dim vectors (or the py4DSTEM calibration
when the dims are in pixels); ``pixels`` means uncalibrated. The direct-beam pixel is
where a detector dim vector crosses 0 when it does not start at 0. Beam energy: only
Prismatic's simulation parameter ``E`` (keV) is recognised. When a file holds several
datacubes the first (in HDF5 order) is read and the others are listed in ``attrs``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import (
    H5Array,
    as_array,
    clean_attrs,
    is_uncalibrated,
    k_step,
    normalise_unit,
    open_h5,
    pair,
    positive,
    scan_step,
    unreadable_hdf5,
)

DATA_GROUP_TYPES = {1, "1", "array", b"array"}
DATA_NAMES = ("data", "datacube")


def read_emd(path: Path, *, lazy: bool) -> RawCube:
    """Read an EMD 1.0 / py4DSTEM datacube; see the module docstring."""
    with open_h5(path, "an .h5/.emd file: EMD 1.0, py4DSTEM or DECTRIS master") as handle:
        groups = _datacube_groups(handle)
        if not groups:
            raise FileFormatError(
                f"{path} holds no EMD data group with a 3D or 4D dataset (a group with emd_group_type 1 "
                "or 'array' and a 'data' dataset); stemkit reads 4D-STEM datacubes"
            )
        group = handle[groups[0]]
        data = _data_of(group)
        dims = _dims(group, data.ndim)
        calibration = _py4dstem_calibration(group)
        energy = _prismatic_energy(handle)
        source = H5Array(str(path), data.name, tuple(data.shape), np.dtype(data.dtype))
        units = attr_text(data.attrs.get("units"))
    if source.dtype.kind not in "iuf":
        raise FileFormatError(f"{path}: {source.dataset} holds dtype {source.dtype}; stemkit needs real intensities")
    k_dims = dims[-2:]
    return RawCube(
        array=as_array(source, lazy=lazy, name="emd"),
        scan_step_nm=_scan_steps(dims, calibration) if source.ndim == 4 else None,
        k_step=_k_steps(k_dims, calibration, energy),
        beam_energy_kev=energy,
        k_origin=_k_origin(k_dims),
        attrs=_attrs(path, groups, source, dims, calibration, units),
    )


def sniff_emd(path: Path) -> bool:
    """The root or a top-level group has an ``emd_group_type`` attribute.

    Also claims HDF5 files that h5py cannot open, so that reading them reports why
    (truncated, damaged) instead of "no format matches".
    """
    import h5py

    if unreadable_hdf5(path):
        return True
    with h5py.File(path, "r") as handle:
        if "emd_group_type" in handle.attrs:
            return True
        return any(isinstance(item, h5py.Group) and "emd_group_type" in item.attrs for item in handle.values())


def attr_text(value: Any) -> str:
    """An HDF5 string attribute or dataset value as ``str``."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _datacube_groups(handle) -> list[str]:
    """Paths of the EMD data groups holding a 3D or 4D dataset; 4D and DataCube first."""
    import h5py

    found = []

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Group) and _group_type(item) in DATA_GROUP_TYPES:
            data = _data_of(item)
            if data is not None and data.ndim in (3, 4):
                is_cube = attr_text(item.attrs.get("python_class")) == "DataCube"
                found.append((data.ndim != 4, not is_cube, len(found), name))

    handle.visititems(visit)
    return [name for *_, name in sorted(found)]


def _group_type(group) -> Any:
    value = group.attrs.get("emd_group_type")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _data_of(group) -> Any:
    import h5py

    for name in DATA_NAMES:
        item = group.get(name)
        if isinstance(item, h5py.Dataset):
            return item
    return None


def _dims(group, ndim: int) -> list[dict]:
    """Name, units, first value and step of every axis (steps ``None`` where not uniform)."""
    first = 0 if "dim0" in group else 1
    dims = []
    for axis in range(ndim):
        vector = group.get(f"dim{axis + first}")
        if vector is None:
            dims.append({"name": f"axis{axis}", "units": "pixels", "start": 0.0, "step": None})
            continue
        values = np.asarray(vector[()], dtype=float).ravel()
        dims.append(
            {
                "name": attr_text(vector.attrs.get("name")),
                "units": normalise_unit(attr_text(vector.attrs.get("units"))),
                "start": float(values[0]) if values.size else 0.0,
                "step": _uniform_step(values),
            }
        )
    return dims


def _uniform_step(values: np.ndarray) -> float | None:
    if values.size < 2:
        return None
    steps = np.diff(values)
    if not np.all(np.isfinite(steps)) or np.ptp(steps) > 1e-4 * abs(steps.mean()):
        return None
    return float(steps.mean())


def _py4dstem_calibration(group) -> dict:
    """``R_pixel_size`` etc. from the datacube's ``metadatabundle/calibration`` (or the root's)."""
    for candidate in (group, group.parent):
        calibration = candidate.get("metadatabundle/calibration")
        if calibration is not None:
            values = {}
            for name, item in calibration.items():
                if hasattr(item, "shape") and item.shape == ():
                    value = item[()]
                    values[name] = value.decode() if isinstance(value, bytes) else value
            return values
    return {}


def _prismatic_energy(handle) -> float | None:
    found = []

    def visit(name: str, item: Any) -> None:
        if name.endswith("simulation_parameters") and "E" in item.attrs:
            found.append(item.attrs["E"])

    handle.visititems(visit)
    return positive(found[0]) if found else None


def _scan_steps(dims: list[dict], calibration: dict) -> tuple[float, float] | None:
    steps = [scan_step(d["step"], d["units"]) if _calibrated(d) else None for d in dims[:2]]
    if None in steps and "R_pixel_size" in calibration:
        step = scan_step(calibration["R_pixel_size"], calibration.get("R_pixel_units", "pixels"))
        steps = [step, step]
    return pair(*steps)


def _k_steps(dims: list[dict], calibration: dict, energy: float | None) -> tuple[float, float] | None:
    steps = [k_step(d["step"], d["units"], energy) if _calibrated(d) else None for d in dims]
    if None in steps and "Q_pixel_size" in calibration:
        step = k_step(calibration["Q_pixel_size"], calibration.get("Q_pixel_units", "pixels"), energy)
        steps = [step, step]
    return pair(*steps)


def _calibrated(dim: dict) -> bool:
    return dim["step"] is not None and not is_uncalibrated(dim["units"])


def _k_origin(dims: list[dict]) -> tuple[float, float] | None:
    if not all(_calibrated(d) for d in dims):
        return None
    origins = [-d["start"] / d["step"] for d in dims]
    if all(o == 0.0 for o in origins) or not all(math.isfinite(o) for o in origins):
        return None
    return (origins[0], origins[1])


def _attrs(path: Path, groups: list[str], source: H5Array, dims: list[dict], calibration: dict, units: str) -> dict:
    return clean_attrs(
        {
            "source": str(path),
            "format": "emd",
            "emd_group": source.dataset.rsplit("/", 1)[0].lstrip("/"),
            "emd_other_datacubes": groups[1:] or None,
            "emd_dim_names": [d["name"] for d in dims],
            "emd_dim_units": [d["units"] for d in dims],
            "intensity_units": units,
            "qr_flip": calibration.get("QR_flip"),
            "qr_rotation_degrees": calibration.get("QR_rotation_degrees"),
        }
    )


FORMAT = Format(
    name="emd",
    description="EMD 1.0 / py4DSTEM datacube (.h5, .emd)",
    suffixes=(".h5", ".hdf5", ".emd"),
    read=read_emd,
    sniff=sniff_emd,
)
