"""NanoMegas TopSpin ``.app5`` files (HDF5), as written and exported by TopSpin.

Layout (as read by ``rsciio.topspin``): groups named by GUIDs. An experiment group holds
``Metadata`` (the procedure's XML: ``ProcedureData`` and ``HardwareSettings`` items such
as ``HighVoltage`` in V and ``DiffractionCameraLength`` in m) and its results: 2D images
as datasets, and a 4D scan as a subgroup with one subgroup per probe position, named
``0``, ``1``, ... in scan order, each holding ``Data`` (one pattern) and ``Metadata``
(XML with ``Calibration/X`` and ``Calibration/Y`` ``Offset``/``Scale`` and
``RequestedBeamPosition`` X, Y in m). A single-experiment file has ``Metadata`` at the
root and the results beside it.

Axis mapping: positions run along x first; the number per row is found from the beam
positions (the first change of y), so pattern ``i`` -> ``(scan_y, scan_x) = divmod(i, n_x)``.
Pattern row -> ``ky``, column -> ``kx``, as stored. No flips; the probe steps are the
distances between neighbouring positions (always positive).

Calibrations: probe step from the beam positions (m -> nm); detector step from the
``Calibration`` ``Scale`` of pattern 0 (``Y`` for rows, ``X`` for columns), an angle in rad
when its ``Type`` is ``Angle``, converted with ``HighVoltage``. When a file holds several
4D scans the first is read and the others are listed in ``attrs``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import as_array, clean_attrs, k_step, open_h5, pair, positive, scan_step

GUID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class H5Frames:
    """Patterns stored as one HDF5 dataset each, sliceable as a ``(*lead_shape, *frame_shape)`` array."""

    path: str
    datasets: tuple[str, ...]
    lead_shape: tuple[int, ...]
    frame_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.lead_shape, *self.frame_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        key = tuple(slice(None) for _ in self.shape) if key is Ellipsis else tuple(key)
        lead = len(self.lead_shape)
        index = np.arange(len(self.datasets)).reshape(self.lead_shape)[key[:lead]]
        frame_key = key[lead:]
        with h5py.File(self.path, "r") as handle:
            frames = [np.asarray(handle[self.datasets[i]][()])[frame_key] for i in index.ravel()]
        frame_shape = frames[0].shape if frames else np.empty(self.frame_shape)[frame_key].shape
        out = np.empty((index.size, *frame_shape), dtype=self.dtype)
        for slot, frame in enumerate(frames):
            out[slot] = frame
        return out.reshape(*index.shape, *frame_shape)


def read_app5(path: Path, *, lazy: bool) -> RawCube:
    """Read the 4D scan of a TopSpin ``.app5`` file; see the module docstring."""
    with open_h5(path, "NanoMegas TopSpin .app5") as handle:
        scans = _scans(handle)
        if not scans:
            raise FileFormatError(
                f"{path} holds no TopSpin 4D scan (a GUID group of numbered patterns with Data and Metadata); "
                "it may hold only images, or not be a TopSpin file"
            )
        experiment, scan = scans[0]
        frames = _frames(path, handle, scan)
        positions = _positions(path, handle[scan])
        calibration = _pattern_calibration(handle[f"{scan}/0/Metadata"][()])
        procedure = _items(handle[f"{experiment}/Metadata"][()]) if f"{experiment}/Metadata" in handle else {}
    n_x, steps = positions
    if len(frames.datasets) % n_x:
        raise FileFormatError(
            f"{path}: the scan has {len(frames.datasets)} patterns, not a whole number of rows of {n_x}; "
            "the acquisition may have been interrupted"
        )
    frames = replace(frames, lead_shape=(len(frames.datasets) // n_x, n_x))
    volts = positive(procedure.get("HighVoltage") or procedure.get("GunHighVoltage"))
    energy = None if volts is None else volts / 1e3
    return RawCube(
        array=as_array(frames, lazy=lazy, name="app5"),
        scan_step_nm=steps,
        k_step=pair(*(_k(calibration.get(axis), energy) for axis in ("Y", "X"))),
        beam_energy_kev=energy,
        attrs=_attrs(path, procedure, scans),
    )


def _scans(handle) -> list[tuple[str, str]]:
    """``(experiment group, scan group)`` for every 4D scan, in file order."""
    import h5py

    experiments = [""] if "Metadata" in handle else []
    experiments += [name for name, item in handle.items() if GUID.match(name) and isinstance(item, h5py.Group)]
    scans = []
    for experiment in experiments:
        group = handle[experiment] if experiment else handle
        for name, item in group.items():
            if GUID.match(name) and isinstance(item, h5py.Group) and isinstance(item.get("0/Data"), h5py.Dataset):
                scans.append((experiment, f"{experiment}/{name}".lstrip("/")))
    return scans


def _frames(path: Path, handle, scan: str) -> H5Frames:
    group = handle[scan]
    n = len(group)
    names = [str(i) for i in range(n)]
    missing = [name for name in names if f"{name}/Data" not in group]
    if missing:
        raise FileFormatError(f"{path}: the scan {scan} has {n} entries but lacks patterns {missing[:5]}")
    first = group["0/Data"]
    if first.ndim != 2 or np.dtype(first.dtype).kind not in "iuf":
        raise FileFormatError(
            f"{path}: patterns should be 2D real arrays; found shape {first.shape}, dtype {first.dtype}"
        )
    shapes = {group[f"{name}/Data"].shape for name in names}
    if len(shapes) > 1:
        raise FileFormatError(f"{path}: the patterns of {scan} differ in shape: {sorted(shapes)}")
    datasets = tuple(f"{scan}/{name}/Data" for name in names)
    return H5Frames(str(path), datasets, (n,), tuple(first.shape), np.dtype(first.dtype).newbyteorder("="))


def _positions(path: Path, group) -> tuple[int, tuple[float, float] | None]:
    """Positions per row and the probe steps (nm), from the requested beam positions."""
    xs, ys = [], []
    row_step = None
    for index in range(len(group)):
        x, y = _beam_position(path, group[f"{index}/Metadata"][()])
        if ys and y != ys[0]:
            row_step = scan_step(abs(y - ys[0]), "m")
            break
        xs.append(x)
        ys.append(y)
    column_step = scan_step(abs(xs[1] - xs[0]), "m") if len(xs) > 1 else None
    return len(xs), pair(row_step, column_step)


def _beam_position(path: Path, xml: bytes) -> tuple[float, float]:
    for item in _xml(xml).iter("Item"):
        if item.findtext("Name") == "RequestedBeamPosition":
            return float(item.findtext("Value/X")), float(item.findtext("Value/Y"))
    raise FileFormatError(f"{path}: a pattern's Metadata has no RequestedBeamPosition, so the scan shape is unknown")


def _pattern_calibration(xml: bytes) -> dict[str, dict]:
    root = _xml(xml)
    out = {}
    for axis in ("X", "Y"):
        element = root.find(f"Calibration/{axis}")
        if element is not None:
            out[axis] = {"scale": element.findtext("Scale"), "type": element.findtext("Type/Text")}
    return out


def _k(calibration: dict | None, energy: float | None) -> float | None:
    if not calibration or calibration.get("type") != "Angle":
        return None
    return k_step(calibration["scale"], "rad", energy)


def _items(xml: bytes) -> dict[str, str]:
    """Every ``<Item><Name>..</Name><Value>..</Value></Item>`` with a plain value."""
    items = {}
    for item in _xml(xml).iter("Item"):
        value = item.find("Value")
        if value is not None and len(value) == 0 and item.findtext("Name"):
            items.setdefault(item.findtext("Name"), (value.text or "").strip())
    return items


def _xml(xml: bytes) -> ET.Element:
    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else str(xml)
    return ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", text.strip()))


def _attrs(path: Path, procedure: dict, scans: list[tuple[str, str]]) -> dict:
    camera = positive(procedure.get("DiffractionCameraLength"))
    precession = positive(procedure.get("PrecessionHardwarePrecessionAngle"))
    return clean_attrs(
        {
            "source": str(path),
            "format": "app5",
            "detector": procedure.get("Camera"),
            "microscope": procedure.get("SystemName"),
            "camera_length_mm": None if camera is None else camera * 1e3,
            "precession_angle_mrad": None if precession is None else precession * 1e3,
            "precession_enabled": procedure.get("IsPrecessionEnabled") == "True" if procedure else None,
            "exposure_s": positive(procedure.get("FrameTime")),
            "app5_scan": scans[0][1],
            "app5_other_scans": [scan for _, scan in scans[1:]] or None,
        }
    )


FORMAT = Format(name="app5", description="NanoMegas TopSpin (.app5)", suffixes=(".app5",), read=read_app5)
