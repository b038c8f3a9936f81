"""DECTRIS Arina (NeXus/NXmx) acquisitions: a ``*_master.h5`` plus ``*_data_NNNNNN.h5`` files.

Layout (DECTRIS SIMPLON / NXmx): the master file's ``/entry/data`` group holds external
links ``data_000001``, ``data_000002``, ... to ``/entry/data/data`` in the data files,
each a ``(n_frames, rows, columns)`` stack, usually bitshuffle/LZ4-compressed (decoded
through ``hdf5plugin``). ``/entry/instrument/detector`` holds the detector settings.
Frames are concatenated in link order.

Axis mapping: frame index -> flat stack; frame row (the detector's slow axis) -> ``ky``,
column (fast axis) -> ``kx``, exactly as stored; the NXmx orientation vectors are kept
in ``attrs`` and not applied.

Scan shape: not recorded (the detector counts triggers, not scan rows), so the reader
returns a flat stack and ``stemkit.load`` asks for ``scan_shape=``.

Calibrations: the beam energy from ``detectorSpecific/photon_energy`` (eV; DECTRIS stores
the electron energy there), the direct-beam pixel from ``beam_center_y``/``beam_center_x``
when they are not both 0. The detector step in 1/Å is not recorded (``detector_distance``
is a geometric distance, not the effective camera length) and must be passed.
"""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as da
import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import H5Array, as_array, clean_attrs, open_h5, positive, rechunk_patterns

LINK = re.compile(r"^data_\d{6}$")
DETECTOR = "entry/instrument/detector"


def read_arina(path: Path, *, lazy: bool) -> RawCube:
    """Read a DECTRIS Arina master file and its data files; see the module docstring."""
    with open_h5(path, "DECTRIS Arina master file") as master:
        links = _links(path, master)
        detector = _detector_fields(master)
    parts = [_part(path, file, dataset) for file, dataset in links]
    _check_parts(path, parts, detector)
    if lazy:
        array = rechunk_patterns(da.concatenate([as_array(p, lazy=True, name="arina") for p in parts], axis=0))
    else:
        array = _read_all(parts)
    center = (detector.get("beam_center_y"), detector.get("beam_center_x"))
    has_center = None not in center and any(float(c) != 0.0 for c in center)
    energy = positive(detector.get("photon_energy"))
    return RawCube(
        array=array,
        beam_energy_kev=None if energy is None else energy / 1e3,
        k_origin=(float(center[0]), float(center[1])) if has_center else None,
        attrs=_attrs(path, detector, parts),
    )


def sniff_arina(path: Path) -> bool:
    """An HDF5 file with ``/entry/data/data_NNNNNN`` links and ``/entry/instrument/detector``."""
    import h5py

    with h5py.File(path, "r") as handle:
        data = handle.get("entry/data", getlink=False)
        return (
            isinstance(data, h5py.Group)
            and any(LINK.match(name) for name in data)
            and isinstance(handle.get(DETECTOR), h5py.Group)
        )


def data_files(path: Path) -> list[Path]:
    """The master file and the data files its links point to."""
    try:
        import h5py

        with h5py.File(path, "r") as master:
            return [path] + [file for file, _ in _links(path, master)]
    except Exception:
        return [path]


def _links(path: Path, master) -> list[tuple[Path, str]]:
    """``(file, dataset)`` for every ``data_NNNNNN`` entry, in order (internal links point into the master)."""
    import h5py

    group = master.get("entry/data")
    if not isinstance(group, h5py.Group):
        raise FileFormatError(f"{path} is not an Arina master file: it has no /entry/data group")
    names = sorted(name for name in group if LINK.match(name))
    if not names:
        raise FileFormatError(f"{path} is not an Arina master file: /entry/data has no data_NNNNNN entries")
    links = []
    for name in names:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            links.append((path.parent / link.filename, link.path))
        else:
            links.append((path, f"entry/data/{name}"))
    return links


def _part(master: Path, file: Path, dataset: str) -> H5Array:
    if not file.exists():
        raise FileNotFoundError(
            f"{master} links its frames to {file.name}, which is not in {file.parent}; "
            "copy every *_data_NNNNNN.h5 file next to the master file"
        )
    with open_h5(file, f"DECTRIS data file of {master.name}") as handle:
        data = handle.get(dataset)
        if data is None or not hasattr(data, "shape"):
            raise FileFormatError(f"{file} (data file of {master.name}) has no dataset {dataset}")
        if data.ndim != 3 or np.dtype(data.dtype).kind not in "iuf":
            raise FileFormatError(
                f"{file}: {dataset} should be a (frames, rows, columns) stack of real numbers; "
                f"found shape {data.shape}, dtype {data.dtype}"
            )
        return H5Array(str(file), dataset, tuple(data.shape), np.dtype(data.dtype))


def _read_all(parts: list[H5Array]) -> np.ndarray:
    """All frames in one array, filled file by file (no second copy)."""
    out = np.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    start = 0
    for part in parts:
        out[start : start + part.shape[0]] = part[...]
        start += part.shape[0]
    return out


def _check_parts(path: Path, parts: list[H5Array], detector: dict) -> None:
    frame_shapes = {p.shape[1:] for p in parts}
    dtypes = {p.dtype for p in parts}
    if len(frame_shapes) > 1 or len(dtypes) > 1:
        raise FileFormatError(f"{path}: its data files disagree on frame shape {frame_shapes} or dtype {dtypes}")
    rows, cols = parts[0].shape[1:]
    expected = (detector.get("y_pixels_in_detector"), detector.get("x_pixels_in_detector"))
    if None not in expected and (int(expected[0]), int(expected[1])) != (rows, cols):
        raise FileFormatError(
            f"{path}: frames are {rows}x{cols} but the detector has {expected[0]}x{expected[1]} pixels (rows x columns)"
        )
    n_frames = sum(p.shape[0] for p in parts)
    nimages, ntrigger = detector.get("nimages"), detector.get("ntrigger")
    if nimages and ntrigger and int(nimages) * int(ntrigger) != n_frames:
        raise FileFormatError(
            f"{path}: the master file announces {int(nimages) * int(ntrigger)} frames "
            f"({nimages} images x {ntrigger} triggers) but its data files hold {n_frames}; "
            "a data file is missing or truncated"
        )


def _detector_fields(master) -> dict:
    fields = {}
    for group_path in (DETECTOR, f"{DETECTOR}/detectorSpecific"):
        group = master.get(group_path)
        if group is None:
            continue
        for name, item in group.items():
            if hasattr(item, "shape") and item.shape in ((), (1,), (2,), (3,), (6,)):
                value = item[()]
                fields[name] = value.decode() if isinstance(value, bytes) else value
    orientation = master.get(f"{DETECTOR}/geometry/orientation/value")
    if orientation is not None:
        fields["orientation"] = orientation[()]
    return fields


def _attrs(path: Path, detector: dict, parts: list[H5Array]) -> dict:
    return clean_attrs(
        {
            "source": str(path),
            "format": "arina",
            "detector": detector.get("description", "DECTRIS Arina"),
            "detector_number": detector.get("detector_number"),
            "exposure_s": detector.get("count_time"),
            "frame_time_s": detector.get("frame_time"),
            "threshold_energy_ev": detector.get("threshold_energy"),
            "bit_depth_image": detector.get("bit_depth_image"),
            "pixel_size_m": detector.get("x_pixel_size"),
            "detector_distance_m": detector.get("detector_distance"),
            "countrate_correction_applied": detector.get("countrate_correction_applied"),
            "pixel_mask_applied": detector.get("pixel_mask_applied"),
            "flatfield_correction_applied": detector.get("flatfield_correction_applied"),
            "compression": detector.get("compression"),
            "data_collection_date": detector.get("data_collection_date"),
            "detector_orientation": detector.get("orientation"),
            "data_files": [Path(p.path).name for p in parts],
        }
    )


FORMAT = Format(
    name="arina",
    description="DECTRIS Arina master file (*_master.h5)",
    suffixes=(".h5",),
    read=read_arina,
    sniff=sniff_arina,
    data_files=data_files,
)
