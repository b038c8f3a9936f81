"""A minimal DigitalMicrograph DM3/DM4 writer for test fixtures, from the published tag-file layout.

File = header + root tag group + 8 zero bytes. All structure integers are big-endian
(4 bytes in DM3, 8 in DM4); tag *values* use the byte order the header declares (here
little-endian).

- header: version (u4 BE), size (u4 DM3 / u8 DM4), byte order (u4 BE, 1 = little-endian)
- tag group: sorted (1 byte), open (1 byte), number of tags
- tag entry: kind (1 byte: 20 group, 21 data), name length (u2 BE), name,
  [DM4 only: byte size of the rest of the entry (u8 BE)], then
  - group: the tag group
  - data: ``%%%%``, length of the info array, the info array, the value.
    Info arrays: ``[type]`` for a simple value, ``[20, type, count]`` for an array.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# DM tag value types
SHORT, LONG, USHORT, ULONG, FLOAT, DOUBLE, BOOL, CHAR, OCTET, ARRAY = 2, 3, 4, 5, 6, 7, 8, 9, 10, 20
TAG_TYPE = {
    np.dtype("int16"): SHORT, np.dtype("int32"): LONG, np.dtype("uint16"): USHORT, np.dtype("uint32"): ULONG,
    np.dtype("float32"): FLOAT, np.dtype("float64"): DOUBLE, np.dtype("uint8"): OCTET, np.dtype("int8"): CHAR,
}
# DM image DataType codes
IMAGE_TYPE = {
    np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6, np.dtype("int32"): 7,
    np.dtype("int8"): 9, np.dtype("uint16"): 10, np.dtype("uint32"): 11, np.dtype("float64"): 12,
}


class Array:
    """A tag holding an array of simple values."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.ascontiguousarray(values)


def text(value: str) -> Array:
    """A DM string tag: an array of UTF-16 code units."""
    return Array(np.frombuffer(value.encode("utf-16-le"), dtype="<u2"))


class Writer:
    def __init__(self, version: int) -> None:
        self.version = version

    def length(self, n: int) -> bytes:
        return struct.pack(">q" if self.version == 4 else ">i", n)

    def group(self, tags: list[tuple[str, object]]) -> bytes:
        body = b"".join(self.entry(name, value) for name, value in tags)
        return b"\x00\x01" + self.length(len(tags)) + body

    def entry(self, name: str, value: object) -> bytes:
        label = name.encode("latin-1")
        if isinstance(value, list):
            kind, rest = b"\x14", self.group(value)
        else:
            kind, rest = b"\x15", self.data(value)
        size = struct.pack(">q", len(rest)) if self.version == 4 else b""
        return kind + struct.pack(">H", len(label)) + label + size + rest

    def data(self, value: object) -> bytes:
        if isinstance(value, Array):
            values = value.values
            info = [ARRAY, TAG_TYPE[np.dtype(values.dtype.name)], values.size]
            payload = values.astype(values.dtype.newbyteorder("<")).tobytes()
        elif isinstance(value, float):
            info, payload = [DOUBLE], struct.pack("<d", value)
        elif isinstance(value, bool):
            info, payload = [BOOL], struct.pack("<?", value)
        elif isinstance(value, int):
            info, payload = [LONG], struct.pack("<i", value)
        else:
            raise TypeError(f"cannot encode {value!r}")
        return b"%%%%" + self.length(len(info)) + b"".join(self.length(i) for i in info) + payload


def image_tags(
    data: np.ndarray,
    *,
    scales: list[float],
    origins: list[float],
    units: list[str],
    name: str = "4D data",
    microscope_info: list | None = None,
) -> list:
    """The tag group of one image; ``scales``, ``origins``, ``units`` are fastest dimension first."""
    dims = [
        ("", [("Origin", float(o)), ("Scale", float(s)), ("Units", text(u))]) for s, o, u in zip(scales, origins, units)
    ]
    image_data = [
        ("Calibrations", [
            ("Brightness", [("Origin", 0.0), ("Scale", 1.0), ("Units", text("counts"))]),
            ("Dimension", dims),
            ("DisplayCalibratedUnits", True),
        ]),
        ("Data", Array(data.ravel())),
        ("DataType", IMAGE_TYPE[data.dtype]),
        ("Dimensions", [("", int(n)) for n in data.shape[::-1]]),
        ("PixelDepth", data.dtype.itemsize),
    ]
    tags = [("Microscope Info", microscope_info)] if microscope_info else []
    return [("ImageData", image_data), ("ImageTags", tags), ("Name", text(name))]


def write_dm(path: Path, images: list[list], *, version: int) -> Path:
    """Write a DM3 (``version=3``) or DM4 file holding ``images`` (from :func:`image_tags`)."""
    writer = Writer(version)
    root = writer.group([("ImageList", [("", image) for image in images]), ("DocumentObjectList", [])])
    size_field = struct.pack(">q" if version == 4 else ">i", len(root))  # the root group's bytes
    path.write_bytes(struct.pack(">i", version) + size_field + struct.pack(">i", 1) + root + b"\x00" * 8)
    return path
