"""Gatan DigitalMicrograph ``.dm3`` / ``.dm4`` files holding a 4D (or 3D) dataset.

The tag tree is parsed by rosettasciio (``rsciio.digitalmicrograph``); the pixels are
memory-mapped here from the offset it reports, after checking that the file holds them.

Layout: ``ImageList/<image>/ImageData`` holds ``Data`` (a flat array), ``DataType``,
``Dimensions`` (sizes, fastest-varying first) and ``Calibrations/Dimension`` (``Scale``,
``Origin``, ``Units`` per dimension, in the same order); a calibrated value is
``(index - Origin) * Scale``. With dimensions ``(d0, d1, d2, d3)`` the C-order array is
``(d3, d2, d1, d0)``.

Axis mapping: the usual 4D-STEM layout stores each diffraction pattern contiguously, so
``d0`` = detector column -> ``kx``, ``d1`` = detector row -> ``ky``, ``d2`` -> ``scan_x``,
``d3`` -> ``scan_y`` (the mapping rosettasciio uses). Newer GMS STEMx files store the
scan fastest instead (``d0, d1`` = scan x, y; ``d2, d3`` = detector x, y); when the
calibration units say so (reciprocal or angle units on ``d2, d3`` and lengths on
``d0, d1``) the array is transposed to ``(scan_y, scan_x, ky, kx)``. No flips.
A 3D dataset ``(d2, d1, d0)`` is a flat stack of patterns.

Calibrations: probe step from the scan dimensions (nm, µm, ...), detector step from the
detector dimensions (1/nm, 1/Å; mrad and rad with the beam energy), beam energy from
``ImageTags/Microscope Info/Voltage`` (V), and the direct-beam pixel from the detector
dimensions' ``Origin`` when it is not 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import (
    RawFrames,
    as_array,
    as_transposed_array,
    check_size,
    clean_attrs,
    is_uncalibrated,
    k_step,
    pair,
    positive,
    read_head,
    scan_step,
)

DATA_TYPES = {1: "i2", 2: "f4", 6: "u1", 7: "i4", 9: "i1", 10: "u2", 11: "u4", 12: "f8"}


def read_dm(path: Path, *, lazy: bool) -> RawCube:
    """Read a DigitalMicrograph ``.dm3``/``.dm4`` file; see the module docstring."""
    _check_signature(path)
    image = _pick_image(path, _parse(path))
    tags = image["original_metadata"]["ImageList"]["TagGroup0"]
    axes = image["axes"]
    frames = _frames(path, tags, [a["size"] for a in axes])
    transposed = len(axes) == 4 and _scan_fastest(axes)
    array = _array(frames, lazy, transposed)
    if transposed:
        axes = [axes[i] for i in (2, 3, 0, 1)]
    energy = _beam_energy(tags)
    return RawCube(
        array=array,
        scan_step_nm=_scan_step(axes) if len(axes) == 4 else None,
        k_step=pair(*(k_step(a["scale"], a["units"], energy) for a in axes[-2:])),
        beam_energy_kev=energy,
        k_origin=_k_origin(axes[-2:]),
        attrs=_attrs(path, tags, transposed),
    )


def _check_signature(path: Path) -> None:
    head = read_head(path, 4)
    version = int.from_bytes(head, "big") if len(head) == 4 else None
    if version not in (3, 4):
        raise FileFormatError(
            f"{path} is not a DigitalMicrograph file: its first 4 bytes should be the version 3 or 4 "
            f"(big-endian), found {head!r}"
        )


def _parse(path: Path) -> list[dict]:
    from rsciio.digitalmicrograph import file_reader

    try:
        return file_reader(str(path), lazy=True)
    except Exception as exc:
        raise FileFormatError(
            f"{path}: rosettasciio could not parse the DigitalMicrograph tag tree ({type(exc).__name__}: {exc}); "
            "the file is truncated or damaged"
        ) from exc


def _pick_image(path: Path, images: list[dict]) -> dict:
    """The largest image with 3 or 4 dimensions (3D: a flat stack of patterns)."""
    candidates = [im for im in images if len(im["axes"]) in (3, 4)]
    if not candidates:
        shapes = [tuple(a["size"] for a in im["axes"]) for im in images]
        raise FileFormatError(
            f"{path} holds no 4D-STEM dataset: its images have shapes {shapes}; stemkit needs "
            "4 dimensions (scan and detector) or a 3D stack of patterns"
        )
    return max(candidates, key=lambda im: (len(im["axes"]), int(np.prod([a["size"] for a in im["axes"]]))))


def _frames(path: Path, tags: dict, shape: list[int]) -> RawFrames:
    image_data = tags["ImageData"]
    code = int(image_data["DataType"])
    if code not in DATA_TYPES:
        raise FileFormatError(
            f"{path} stores DigitalMicrograph data type {code} (complex, RGB or packed); "
            f"stemkit reads real intensities (types {sorted(DATA_TYPES)})"
        )
    data = image_data["Data"]
    endian = "<" if data.get("endian", "little") == "little" else ">"
    frames = RawFrames(str(path), int(data["offset"]), tuple(shape[:-2]), tuple(shape[-2:]), endian + DATA_TYPES[code])
    n_values = int(np.prod(shape))
    if int(data["size"]) != n_values:
        raise FileFormatError(
            f"{path} is inconsistent: ImageData/Data holds {data['size']} values but the dimensions "
            f"{shape[::-1]} (fastest first) need {n_values}"
        )
    check_size(path, frames.end, f"the {shape} {frames.dtype} pixels from byte {frames.offset}")
    return frames


def _unit_kind(units: str) -> str:
    if is_uncalibrated(units):
        return "pixel"
    if scan_step(1.0, units) is not None:
        return "length"
    if k_step(1.0, units, 300.0) is not None:
        return "reciprocal"
    return "unknown"


def _scan_fastest(axes: list[dict]) -> bool:
    """Whether the calibrations say the STEMx layout: detector axes first, scan axes last."""
    kinds = [_unit_kind(a["units"]) for a in axes]
    return kinds[:2] == ["reciprocal", "reciprocal"] and kinds[2:] == ["length", "length"]


def _array(frames: RawFrames, lazy: bool, transposed: bool) -> Any:
    if not transposed:
        return as_array(frames, lazy=lazy, name="dm")
    return as_transposed_array(frames, (2, 3, 0, 1), lazy=lazy, name="dm")


def _scan_step(axes: list[dict]) -> tuple[float, float] | None:
    return pair(*(scan_step(a["scale"], a["units"]) for a in axes[:2]))


def _k_origin(axes: list[dict]) -> tuple[float, float] | None:
    origins = [-float(a["offset"]) / float(a["scale"]) if float(a["scale"]) else 0.0 for a in axes]
    if all(o == 0.0 for o in origins) or any(is_uncalibrated(a["units"]) for a in axes):
        return None
    return (origins[0], origins[1])


def _lookup(tree: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _beam_energy(tags: dict) -> float | None:
    volts = positive(_lookup(tags, "ImageTags", "Microscope Info", "Voltage"))
    return None if volts is None else volts / 1e3


def _attrs(path: Path, tags: dict, transposed: bool) -> dict:
    info = _lookup(tags, "ImageTags", "Microscope Info") or {}
    attrs = {
        "source": str(path),
        "format": "dm",
        "title": tags.get("Name"),
        "microscope": info.get("Microscope"),
        "camera_length_mm": info.get("STEM Camera Length"),
        "convergence_mrad": positive(info.get("Convergence Angle (mrad)") or info.get("Convergence Semi-angle (mrad)")),
        "exposure_s": _lookup(tags, "ImageTags", "Acquisition", "Parameters", "High Level", "Exposure (s)"),
        "detector": _lookup(tags, "ImageTags", "Acquisition", "Device", "Name"),
        "dm_layout": "scan fastest (STEMx), transposed on reading" if transposed else "pattern fastest",
    }
    return clean_attrs({k: v for k, v in attrs.items() if v is not None})


FORMAT = Format(
    name="dm", description="Gatan DigitalMicrograph (.dm3, .dm4)", suffixes=(".dm3", ".dm4"), read=read_dm
)
