"""Helpers shared by the format readers: lazy array access, size checks, units and attrs.

Array access goes through small picklable "slicers" (:class:`RawFrames` for raw binary
files, :class:`H5Array` for HDF5 datasets) that open the file for every read. Wrapped in
dask they give lazy arrays that never hold a file handle and that survive pickling to
distributed workers; :func:`as_array` turns one into a numpy array or a dask array
chunked by whole patterns.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from stemkit.data.units import k_to_inverse_angstrom, length_to_nm
from stemkit.io.errors import FileFormatError
from stemkit.io.lazy import pattern_chunks

AttrValue = str | int | float | bool | list


# ---------------------------------------------------------------------------------------
# array access
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFrames:
    """Frames of a raw binary file, sliceable like a ``(*lead_shape, *frame_shape)`` array.

    The file holds ``prod(lead_shape)`` records from byte ``offset`` on, each made of
    ``header_bytes`` of frame header, the frame's pixels in C order (rows first) and
    ``footer_bytes`` of trailer. Every read memory-maps the file afresh and returns a
    native-endian copy of just the requested part.
    """

    path: str
    offset: int
    lead_shape: tuple[int, ...]
    frame_shape: tuple[int, ...]
    pixel_dtype: str
    header_bytes: int = 0
    footer_bytes: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.lead_shape, *self.frame_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.pixel_dtype).newbyteorder("=")

    @property
    def record_dtype(self) -> np.dtype:
        fields = [("data", np.dtype(self.pixel_dtype), self.frame_shape)]
        if self.header_bytes:
            fields.insert(0, ("header", np.uint8, (self.header_bytes,)))
        if self.footer_bytes:
            fields.append(("footer", np.uint8, (self.footer_bytes,)))
        return np.dtype(fields)

    @property
    def end(self) -> int:
        """The byte just after the last record."""
        return self.offset + math.prod(self.lead_shape) * self.record_dtype.itemsize

    def __getitem__(self, key: Any) -> np.ndarray:
        records = np.memmap(self.path, mode="r", dtype=self.record_dtype, offset=self.offset, shape=self.lead_shape)
        return np.array(records["data"][key], dtype=self.dtype)


@dataclass(frozen=True)
class H5Array:
    """One HDF5 dataset, sliceable like an array; every read opens the file afresh."""

    path: str
    dataset: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the compression filters)

        with h5py.File(self.path, "r") as handle:
            return np.asarray(handle[self.dataset][key])


def as_array(source: Any, *, lazy: bool, name: str, chunks: tuple[int, ...] | None = None) -> Any:
    """``source`` as a numpy array, or with ``lazy`` a dask array chunked by whole patterns.

    Parameters
    ----------
    source
        Anything with ``shape``, ``dtype`` and numpy slicing whose last two axes are the
        detector rows and columns (a :class:`RawFrames`, an :class:`H5Array`, a memmap).
    lazy
        Return a dask array instead of reading the data.
    name
        A prefix for the dask graph keys (the format's name).
    chunks
        Dask chunks to use instead of whole patterns (for layouts that are transposed
        after reading).
    """
    if not lazy:
        return np.asarray(source[...])
    if chunks is None:
        chunks = pattern_chunks(tuple(source.shape), np.dtype(source.dtype).itemsize)
    meta = np.empty((0,) * len(source.shape), dtype=source.dtype)
    return da.from_array(source, chunks=chunks, name=f"{name}-{tokenize(source, _stamp(source))}", meta=meta)


def as_transposed_array(source: Any, order: tuple[int, ...], *, lazy: bool, name: str) -> Any:
    """``source`` transposed by ``order``; lazily, chunked by whole patterns of the transposed array.

    For layouts that store the axes in another order than ``(scan_y, scan_x, ky, kx)``:
    the chunks are chosen on the result and mapped back onto the stored axes, so every
    chunk still holds whole patterns after the transpose.
    """
    if not lazy:
        return np.ascontiguousarray(np.asarray(source[...]).transpose(order))
    shape = tuple(source.shape[i] for i in order)
    wanted = pattern_chunks(shape, np.dtype(source.dtype).itemsize)
    stored = [0] * len(order)
    for position, axis in enumerate(order):
        stored[axis] = wanted[position]
    return as_array(source, lazy=True, name=name, chunks=tuple(stored)).transpose(order)


def rechunk_patterns(array: da.Array) -> da.Array:
    """Rechunk a dask array to whole patterns per chunk (``stemkit.io.lazy.pattern_chunks``)."""
    return array.rechunk(pattern_chunks(tuple(array.shape), array.dtype.itemsize))


def _stamp(source: Any) -> tuple:
    path = getattr(source, "path", None)
    if path is None:
        return ()
    stat = os.stat(path)
    return (stat.st_size, stat.st_mtime_ns)


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------


def check_size(path: Path, needed: int, what: str) -> None:
    """Raise :class:`FileFormatError` when ``path`` is shorter than ``needed`` bytes."""
    size = path.stat().st_size
    if size < needed:
        raise FileFormatError(
            f"{path} is truncated: {what} need {needed} bytes but the file has {size} "
            f"({needed - size} missing). Was the acquisition or the copy interrupted?"
        )


def read_head(path: Path, n_bytes: int) -> bytes:
    """The first ``n_bytes`` of a file (fewer if the file is shorter)."""
    with open(path, "rb") as handle:
        return handle.read(n_bytes)


def open_h5(path: Path, description: str):
    """Open an HDF5 file read-only, turning HDF5's errors into :class:`FileFormatError`."""
    import h5py
    import hdf5plugin  # noqa: F401

    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileFormatError(
            f"{path} could not be opened as HDF5 ({description}): {exc}. "
            "The file may be truncated (an interrupted copy) or not an HDF5 file."
        ) from exc


def is_hdf5(path: Path) -> bool:
    """Whether the file starts with the HDF5 signature (at byte 0; user blocks are not searched)."""
    return read_head(path, 8) == b"\x89HDF\r\n\x1a\n"


def unreadable_hdf5(path: Path) -> bool:
    """Whether the file starts like HDF5 but h5py cannot open it (truncated or damaged)."""
    import h5py

    if not is_hdf5(path):
        return False
    try:
        h5py.File(path, "r").close()
    except OSError:
        return True
    return False


# ---------------------------------------------------------------------------------------
# calibrations
# ---------------------------------------------------------------------------------------

UNCALIBRATED_UNITS = {"", "px", "pixel", "pixels", "pix", "1", "none", "<undefined>", "undefined", "a.u."}
UNIT_ALIASES = {  # lower-cased spellings seen in files -> names stemkit.data.units knows
    "nm-1": "1/nm", "a-1": "1/A", "å-1": "1/Å", "1/ang": "1/A", "ang^-1": "A^-1", "ang": "A", "ångström": "Å",
    "mrads": "mrad",
}


def normalise_unit(units: Any) -> str:
    """A unit string as found in a file, cleaned for ``stemkit.data.units``.

    Drops brackets, spaces and underscores (EMD writes ``[n_m^-1]``), and decodes bytes.
    """
    if isinstance(units, bytes | np.bytes_):
        units = units.decode("utf-8", "replace")
    text = str(units).strip().strip("[]").replace(" ", "").replace("_", "")
    return UNIT_ALIASES.get(text.lower(), text)


def is_uncalibrated(units: Any) -> bool:
    """Whether a unit string means "pixels" (no calibration)."""
    return normalise_unit(units).lower() in UNCALIBRATED_UNITS


def scan_step(value: Any, units: Any) -> float | None:
    """A probe step in nm, or ``None`` when the units are pixels/unknown or the step is not positive."""
    try:
        step = length_to_nm(float(value), normalise_unit(units))
    except (TypeError, ValueError):
        return None
    return step if math.isfinite(step) and step > 0 else None


def k_step(value: Any, units: Any, beam_energy_kev: float | None) -> float | None:
    """A detector step in 1/Å, or ``None`` when it cannot be converted.

    Angles (mrad, rad) need ``beam_energy_kev``; without it the step stays ``None``.
    """
    try:
        step = k_to_inverse_angstrom(float(value), normalise_unit(units), beam_energy_kev)
    except (TypeError, ValueError):
        return None
    return step if math.isfinite(step) and step > 0 else None


def pair(y: float | None, x: float | None) -> tuple[float, float] | None:
    """``(y, x)``, or ``None`` unless both are known."""
    if y is None or x is None:
        return None
    return (float(y), float(x))


def positive(value: Any) -> float | None:
    """``float(value)`` if it is a finite positive number, else ``None``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


# ---------------------------------------------------------------------------------------
# attrs
# ---------------------------------------------------------------------------------------


def attr_value(value: Any) -> AttrValue | None:
    """``value`` as something netCDF can store (str, int, float, bool or a list), else ``None``."""
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return value.strip("\x00").strip()
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, np.ndarray | list | tuple) and 0 < len(value) <= 64:
        items = [attr_value(v) for v in np.asarray(value).ravel().tolist()]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return items
        if all(isinstance(v, str) for v in items):
            return items
    return None


def clean_attrs(attrs: Mapping[str, Any]) -> dict[str, AttrValue]:
    """Keep only the attrs whose values netCDF can store, converted to plain Python."""
    out = {}
    for key, value in attrs.items():
        clean = attr_value(value)
        if clean is not None and clean != "":
            out[str(key)] = clean
    return out
