"""Quantum Detectors Merlin (Medipix3) ``.mib`` files, with the optional ``.hdr`` beside them.

Layout (Merlin manual, "MIB file format"): a sequence of frames, each an ASCII header
followed by the pixels. The header is comma-separated and starts ``MQ1``; its fields
are ``MQ1, frame number, header bytes (offset to the pixels), number of chips,
columns (x), rows (y), pixel type (U08/U16/U32; R64 = raw counter dump), layout, chip
select, time stamp, shutter time in s, counter, colour mode, gain mode, threshold 0–7 in
keV, ...`` and, in newer firmware, extended fields (``MQ1A``, time stamp, shutter time in
ns, counter depth). Pixels are big-endian unsigned integers, ``rows x columns`` in C
order, row 0 first.

Axis mapping: frame row -> ``ky``, frame column -> ``kx``, exactly as stored. No flip is
applied: rosettasciio and pyxem flip the rows (``np.flip(axis=-2)``) to match the Merlin
software's display, which is a display convention, not part of the file layout. Data
loaded here are therefore the rosettasciio data flipped upside down.

Scan shape: the MIB file does not record it. With a ``.hdr`` whose "Frames per Trigger"
is between 1 and the number of frames (one trigger per scan line), the frames are
``(frames // frames_per_trigger, frames_per_trigger)``; otherwise the reader returns a
flat stack and ``stemkit.load`` asks for ``scan_shape=``. Calibrations (detector step,
beam energy, probe step) are not in the file and must be passed to ``stemkit.load``.

Raw (``R64``) frames are not supported.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import RawFrames, as_array, check_size, clean_attrs, read_head

MAGIC = b"MQ1,"
PIXEL_TYPES = {"U08": ">u1", "U16": ">u2", "U32": ">u4"}
MIN_HEADER = 384


def read_mib(path: Path, *, lazy: bool) -> RawCube:
    """Read a Merlin ``.mib`` file; see the module docstring."""
    header = _first_header(path)
    frames = _frames(path, header)
    hdr = _read_hdr(path.with_suffix(".hdr"))
    n_frames = frames.lead_shape[0]
    announced = _number(hdr.get("Frames in Acquisition (Number)"))
    if announced is not None and announced > n_frames:
        raise FileFormatError(
            f"{path} is truncated: its .hdr announces {announced} frames but the file holds {n_frames}. "
            "Was the acquisition interrupted or the copy incomplete?"
        )
    scan = _scan_shape(hdr, n_frames)
    if scan is not None:
        frames = replace(frames, lead_shape=scan)
    return RawCube(array=as_array(frames, lazy=lazy, name="mib"), attrs=_attrs(path, header, hdr))


def _first_header(path: Path) -> list[str]:
    head = read_head(path, MIN_HEADER)
    if not head.startswith(MAGIC):
        raise FileFormatError(
            f"{path} is not a Merlin .mib file: it should start with {MAGIC!r} but starts with {head[:8]!r}"
        )
    fields = head.decode("ascii", "replace").split(",")
    try:
        size = int(fields[2])
    except (IndexError, ValueError):
        raise FileFormatError(
            f"{path}: the first MIB header has no valid header size (field 3 is {fields[2:3]})"
        ) from None
    if size > MIN_HEADER:
        fields = read_head(path, size).decode("ascii", "replace").split(",")
    if len(fields) < 11:
        raise FileFormatError(f"{path} is truncated or damaged: its first MIB header has only {len(fields)} fields")
    return fields


def _frames(path: Path, header: list[str]) -> RawFrames:
    kind = header[6].strip()
    if kind not in PIXEL_TYPES:
        raise FileFormatError(
            f"{path} holds MIB pixel type {kind!r}; stemkit reads {sorted(PIXEL_TYPES)} "
            "(raw 'R64' counter dumps must be converted in the Merlin software first)"
        )
    try:
        header_bytes, n_x, n_y = int(header[2]), int(header[4]), int(header[5])
    except ValueError:
        raise FileFormatError(f"{path}: the MIB header's size fields are not numbers: {header[2:6]}") from None
    if min(header_bytes, n_x, n_y) <= 0:
        raise FileFormatError(
            f"{path}: the MIB header gives an empty frame ({n_y} x {n_x} pixels, {header_bytes}-byte header)"
        )
    single = RawFrames(str(path), 0, (1,), (n_y, n_x), PIXEL_TYPES[kind], header_bytes=header_bytes)
    frame_bytes = single.record_dtype.itemsize
    size = path.stat().st_size
    check_size(path, frame_bytes, "one MIB frame")
    if size % frame_bytes:
        raise FileFormatError(
            f"{path} is truncated or damaged: its size ({size} bytes) is not a whole number of "
            f"{frame_bytes}-byte frames ({header_bytes}-byte header + {n_y}x{n_x} {kind} pixels); "
            f"{size // frame_bytes} whole frames and {size % frame_bytes} stray bytes"
        )
    frames = RawFrames(str(path), 0, (size // frame_bytes,), (n_y, n_x), PIXEL_TYPES[kind], header_bytes=header_bytes)
    _check_last_header(path, frames, header)
    return frames


def _check_last_header(path: Path, frames: RawFrames, first: list[str]) -> None:
    """The last frame must have a MIB header whose frame number follows from the first one."""
    n = frames.lead_shape[0]
    with open(path, "rb") as handle:
        handle.seek((n - 1) * frames.record_dtype.itemsize)
        last = handle.read(frames.header_bytes)
    fields = last.decode("ascii", "replace").split(",")
    if not last.startswith(MAGIC) or len(fields) < 3:
        raise FileFormatError(f"{path} is damaged: frame {n} does not start with a MIB header ({last[:8]!r})")
    try:
        gap = int(fields[1]) - int(first[1])
    except ValueError:
        raise FileFormatError(f"{path} is damaged: frame {n}'s header has frame number {fields[1]!r}") from None
    if gap != n - 1:
        raise FileFormatError(
            f"{path} is damaged: frame numbers run from {first[1]} to {fields[1]} over {n} frames; "
            "frames are missing or the file mixes acquisitions"
        )


def _read_hdr(path: Path) -> dict[str, str]:
    """The key: value lines of a Merlin ``.hdr`` file, or ``{}`` when there is none."""
    if not path.exists():
        return {}
    text = path.read_bytes().decode("latin-1").replace("\x00", "")
    entries = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            entries[key.strip()] = value.strip()
    return entries


def _scan_shape(hdr: dict[str, str], n_frames: int) -> tuple[int, int] | None:
    try:
        per_trigger = int(hdr.get("Frames per Trigger (Number)", "0"))
    except ValueError:
        return None
    if 1 < per_trigger < n_frames and n_frames % per_trigger == 0:
        return (n_frames // per_trigger, per_trigger)
    return None


def _attrs(path: Path, header: list[str], hdr: dict[str, str]) -> dict:
    attrs = {
        "source": str(path),
        "format": "mib",
        "detector": "Quantum Detectors Merlin",
        "mib_pixel_type": header[6],
        "mib_layout": header[7].strip(),
        "acquisition_time": header[9],
        "threshold_0_kev": _number(header[14]) if len(header) > 14 else None,
    }
    exposure = _number(header[10])
    if exposure is not None:
        attrs["exposure_s"] = exposure
    if hdr:
        attrs["counter_depth"] = _number(hdr.get("Counter Depth (number)"))
        attrs["chip_mode"] = hdr.get("Chip Mode  (SPM, CSM, CM, CSCM)")
        attrs["frames_in_acquisition"] = _number(hdr.get("Frames in Acquisition (Number)"))
        attrs["frames_per_trigger"] = _number(hdr.get("Frames per Trigger (Number)"))
        attrs["software_version"] = hdr.get("Software Version")
    return clean_attrs({k: v for k, v in attrs.items() if v is not None})


def _number(text: str | None) -> int | float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


FORMAT = Format(name="mib", description="Quantum Detectors Merlin (.mib)", suffixes=(".mib",), read=read_mib)
