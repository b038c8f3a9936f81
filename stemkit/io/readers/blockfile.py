"""NanoMegas ASTAR block files (``.blo``).

Layout (as documented by rosettasciio's reader; all little-endian): a header at byte 0 ::

    "IMGBLO"  magic u2 (0x0102)  offset_vbf u4  offset_patterns u4  flags u4
    pattern_size u2  pattern_rotation u2 (1/100 deg)  NX u2  NY u2  scan_rotation u2 (1/100 deg)
    SX f8 (nm)  SY f8 (nm)  beam_energy u4 (V)  SDP u2 (100 * pixels per cm)
    camera_length u4 (1/10 mm)  acquisition_time f8 (serial date)  centering f8 x 8  distortion f8 x 14

then a note (latin-1 text) up to ``offset_vbf``, a ``NX * NY`` uint8 virtual bright-field
image, and from ``offset_patterns`` on ``NY * NX`` records of a 6-byte frame header
(``AA 55`` + u4 frame number) and ``pattern_size x pattern_size`` uint8 pixels. Records
run along x first (``NX`` per scan row). Patterns are square.

Axis mapping: record ``i`` -> ``(scan_y, scan_x) = divmod(i, NX)``; pattern row -> ``ky``,
column -> ``kx``, as stored (the same array rosettasciio returns).

Calibrations: probe step ``(SY, SX)`` in nm; beam energy from the header; detector step
from the screen calibration: a pixel spans ``1 / (SDP / 100)`` cm on the viewing screen,
which at camera length ``L`` is the angle ``pixel_cm / L_cm`` (small angles), converted to
1/Å with the beam energy. Where any of these is 0 the value stays unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import RawFrames, as_array, check_size, clean_attrs, k_step, pair, positive, read_head

MAGIC = b"IMGBLO"
FRAME_MAGIC = b"\xaa\x55"
HEADER = np.dtype(
    [
        ("ID", "S6"), ("MAGIC", "<u2"), ("Data_offset_1", "<u4"), ("Data_offset_2", "<u4"),
        ("UNKNOWN1", "<u4"), ("DP_SZ", "<u2"), ("DP_rotation", "<u2"), ("NX", "<u2"), ("NY", "<u2"),
        ("Scan_rotation", "<u2"), ("SX", "<f8"), ("SY", "<f8"), ("Beam_energy", "<u4"), ("SDP", "<u2"),
        ("Camera_length", "<u4"), ("Acquisition_time", "<f8"),
        *[(f"Centering_N{i}", "<f8") for i in range(8)], *[(f"Distortion_N{i:02d}", "<f8") for i in range(14)],
    ]
)
FRAME_HEADER_BYTES = 6


def read_blo(path: Path, *, lazy: bool) -> RawCube:
    """Read a NanoMegas block file; see the module docstring."""
    header = _header(path)
    frames = _frames(path, header)
    energy_kev = positive(header["Beam_energy"] / 1e3)
    return RawCube(
        array=as_array(frames, lazy=lazy, name="blo"),
        scan_step_nm=pair(positive(header["SY"]), positive(header["SX"])),
        k_step=_k_step(header, energy_kev),
        beam_energy_kev=energy_kev,
        attrs=_attrs(path, header),
    )


def _header(path: Path) -> np.void:
    raw = read_head(path, HEADER.itemsize)
    if not raw.startswith(MAGIC):
        raise FileFormatError(f"{path} is not a NanoMegas block file: it should start with {MAGIC!r}, not {raw[:6]!r}")
    check_size(path, HEADER.itemsize, "the block-file header")
    header = np.frombuffer(raw, dtype=HEADER, count=1)[0]
    if min(int(header["NX"]), int(header["NY"]), int(header["DP_SZ"])) == 0:
        raise FileFormatError(
            f"{path}: the block-file header gives an empty scan or pattern "
            f"(NX={header['NX']}, NY={header['NY']}, pattern size={header['DP_SZ']})"
        )
    return header


def _frames(path: Path, header: np.void) -> RawFrames:
    n_y, n_x, size = int(header["NY"]), int(header["NX"]), int(header["DP_SZ"])
    frames = RawFrames(
        str(path), int(header["Data_offset_2"]), (n_y, n_x), (size, size), "u1", header_bytes=FRAME_HEADER_BYTES
    )
    check_size(path, frames.end, f"{n_y}x{n_x} patterns of {size}x{size} pixels from byte {frames.offset}")
    record = frames.record_dtype.itemsize
    for index in (0, n_y * n_x - 1):
        with open(path, "rb") as handle:
            handle.seek(frames.offset + index * record)
            head = handle.read(FRAME_HEADER_BYTES)
        if head[:2] != FRAME_MAGIC:
            raise FileFormatError(
                f"{path} is damaged: pattern {index} does not start with the block-file frame marker AA 55 "
                f"(found {head[:2].hex(' ')}); the header's offsets or sizes do not match the data"
            )
    return frames


def _k_step(header: np.void, energy_kev: float | None) -> tuple[float, float] | None:
    pixels_per_cm = positive(header["SDP"] / 100.0)
    camera_cm = positive(header["Camera_length"] / 100.0)  # 1/10 mm -> cm
    if pixels_per_cm is None or camera_cm is None:
        return None
    step = k_step(1.0 / pixels_per_cm / camera_cm, "rad", energy_kev)
    return None if step is None else (step, step)


def _attrs(path: Path, header: np.void) -> dict:
    with open(path, "rb") as handle:
        handle.seek(HEADER.itemsize)
        note = handle.read(max(0, int(header["Data_offset_1"]) - HEADER.itemsize))
    return clean_attrs(
        {
            "source": str(path),
            "format": "blo",
            "detector": "NanoMegas ASTAR (block file)",
            "camera_length_mm": float(header["Camera_length"]) / 10.0,
            "screen_pixels_per_cm": float(header["SDP"]) / 100.0,
            "scan_rotation_deg": float(header["Scan_rotation"]) / 100.0,
            "pattern_rotation_deg": float(header["DP_rotation"]) / 100.0,
            "note": note.split(b"\x00")[0].decode("latin-1").strip(),
        }
    )


FORMAT = Format(name="blo", description="NanoMegas ASTAR block file (.blo)", suffixes=(".blo",), read=read_blo)
