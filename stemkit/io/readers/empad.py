"""EMPAD (Electron Microscope Pixel Array Detector) acquisitions: an ``.xml`` plus a ``.raw``.

Layout (EMPAD software, as read by rosettasciio): the XML's ``<raw_file filename=...>``
names the raw file beside it. The raw file is a sequence of little-endian float32 frames
of 130 rows x 128 columns, C order: 128 rows of pixels followed by 2 rows of frame
metadata, which are dropped. Frames run along x first. The scan size comes from
``pix_x``/``pix_y`` (old software), ``scan_parameters[@mode='acquire']``
(``scan_resolution_x``/``_y``) or the raw file name ``scan_x<NX>_y<NY>.raw``; an XML with
``scan_parameters/series_count`` describes a flat series of frames.

Axis mapping: frame ``i`` -> ``(scan_y, scan_x) = divmod(i, NX)``; pixel row -> ``ky``,
column -> ``kx``, as stored (the same array rosettasciio returns). No flips.

Calibrations (parsed by ``rsciio.empad``): probe step from the scan field of view,
detector step from ``calibrated_pixelsize`` when the XML has it (newer software does not
record it), beam energy from ``iom_measurements/high_voltage`` (V).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import RawFrames, as_array, check_size, clean_attrs, k_step, pair, positive, scan_step

ROWS, COLS, RAW_ROWS = 128, 128, 130
FOOTER_BYTES = (RAW_ROWS - ROWS) * COLS * 4
SCAN_NAME = re.compile(r"_x(\d+)_y(\d+)\.raw$")


def read_empad(path: Path, *, lazy: bool) -> RawCube:
    """Read an EMPAD ``.xml`` and the ``.raw`` file it names; see the module docstring."""
    root = _xml_root(path)
    raw = _raw_path(path, root)
    lead = _lead_shape(path, root, raw)
    frames = RawFrames(str(raw), 0, lead, (ROWS, COLS), "<f4", footer_bytes=FOOTER_BYTES)
    frames_text = "x".join(str(n) for n in lead)
    check_size(raw, frames.end, f"the {frames_text} EMPAD frames of {RAW_ROWS}x{COLS} float32 announced by {path.name}")
    calibration = _rsciio_calibration(path)
    energy = _beam_energy(root)
    return RawCube(
        array=as_array(frames, lazy=lazy, name="empad"),
        scan_step_nm=calibration.get("scan") if len(lead) == 2 else None,
        k_step=_k_step(calibration, energy),
        beam_energy_kev=energy,
        attrs=_attrs(path, raw, root),
    )


def sniff_empad(path: Path) -> bool:
    """An XML file whose root has a ``raw_file`` element."""
    return _xml_root(path).find("raw_file") is not None


def data_files(path: Path) -> list[Path]:
    """The raw file named by the XML (the XML itself when it cannot be parsed)."""
    try:
        return [_raw_path(path, _xml_root(path))]
    except Exception:
        return [path]


def _xml_root(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise FileFormatError(f"{path} is not a valid EMPAD XML file: {exc}") from exc


def _raw_path(path: Path, root: ET.Element) -> Path:
    element = root.find("raw_file")
    name = None if element is None else element.get("filename")
    if not name:
        raise FileFormatError(f"{path} is not an EMPAD XML file: it has no <raw_file filename=...> element")
    raw = path.parent / Path(name.strip()).name
    if not raw.exists():
        raise FileNotFoundError(f"{path} names the raw file {raw.name}, which is not in {path.parent}")
    return raw


def _lead_shape(path: Path, root: ET.Element, raw: Path) -> tuple[int, ...]:
    series = root.findtext("scan_parameters/series_count")
    if series is not None:
        return (_count(path, series, "series_count"),)
    if root.findtext("pix_x") is not None and root.findtext("pix_y") is not None:
        return (_count(path, root.findtext("pix_y"), "pix_y"), _count(path, root.findtext("pix_x"), "pix_x"))
    for params in root.findall("scan_parameters"):
        if params.get("mode") == "acquire" and params.findtext("scan_resolution_x") is not None:
            n_y = _count(path, params.findtext("scan_resolution_y"), "scan_resolution_y")
            return (n_y, _count(path, params.findtext("scan_resolution_x"), "scan_resolution_x"))
    match = SCAN_NAME.search(raw.name)
    if match:
        return (int(match.group(2)), int(match.group(1)))
    raise FileFormatError(
        f"{path} does not record the scan size (no pix_x/pix_y, scan_parameters or scan_x<N>_y<N> raw file name)"
    )


def _count(path: Path, text: str | None, what: str) -> int:
    try:
        value = int(float(text))
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise FileFormatError(f"{path}: {what} should be a positive whole number, found {text!r}")
    return value


def _rsciio_calibration(path: Path) -> dict[str, Any]:
    """Probe step (nm) and detector step (value, units) as rosettasciio reads them from the XML."""
    from rsciio.empad import file_reader

    try:
        axes = {a["name"]: a for a in file_reader(str(path), lazy=True)[0]["axes"]}
    except Exception:  # the data are still readable; the calibrations stay unknown
        return {}
    out: dict[str, Any] = {}
    if "scan_y" in axes and "scan_x" in axes:
        out["scan"] = pair(*(scan_step(axes[n]["scale"], axes[n]["units"] or "") for n in ("scan_y", "scan_x")))
    detector = [axes.get(n) for n in ("height", "width")]
    if None not in detector and all(a["units"] for a in detector):
        out["k"] = [(a["scale"], a["units"]) for a in detector]
    return out


def _k_step(calibration: dict, energy: float | None) -> tuple[float, float] | None:
    if "k" not in calibration:
        return None
    return pair(*(k_step(value, units, energy) for value, units in calibration["k"]))


def _beam_energy(root: ET.Element) -> float | None:
    volts = positive(root.findtext("iom_measurements/high_voltage"))
    return None if volts is None else volts / 1e3


def _attrs(path: Path, raw: Path, root: ET.Element) -> dict:
    camera = positive(root.findtext("iom_measurements/nominal_camera_length"))
    stamp = root.find("timestamp")
    return clean_attrs(
        {
            "source": str(path),
            "format": "empad",
            "detector": "EMPAD",
            "raw_file": raw.name,
            "exposure_time": _float(root.findtext("exposure_time")),
            "camera_length_mm": None if camera is None else camera * 1e3,
            "software_version": root.findtext("software_version"),
            "acquisition_time": None if stamp is None else stamp.get("isoformat"),
        }
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


FORMAT = Format(
    name="empad",
    description="EMPAD detector (.xml + .raw)",
    suffixes=(".xml",),
    read=read_empad,
    sniff=sniff_empad,
    data_files=data_files,
)
