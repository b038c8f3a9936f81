"""NumPy ``.npy`` arrays: ``(scan_y, scan_x, ky, kx)``, or a flat stack with ``scan_shape``.

A ``.npy`` file holds no calibration, so ``k_step`` and ``beam_energy_kev`` must be given.
Lazy loading memory-maps the file and wraps it in dask, chunked by whole patterns.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.lazy import pattern_chunks
from stemkit.io.rawcube import RawCube

MAGIC = b"\x93NUMPY"


def read_npy(path: Path, *, lazy: bool) -> RawCube:
    """Read a ``.npy`` file; see the module docstring."""
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise FileFormatError(f"{path} is not a NumPy .npy file (its first bytes are not the .npy magic string)")
    try:
        array = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
    except ValueError as exc:
        raise FileFormatError(f"{path} is damaged or truncated: numpy could not read it ({exc})") from exc
    if array.dtype.kind not in "iuf":
        raise FileFormatError(f"{path} holds dtype {array.dtype}; stemkit needs real-valued intensities")
    if lazy:
        array = da.from_array(array, chunks=pattern_chunks(array.shape, array.dtype.itemsize), name=f"npy-{path.name}")
    return RawCube(array=array, attrs={"source": str(path), "format": "npy"})


FORMAT = Format(name="npy", description="NumPy array (.npy)", suffixes=(".npy",), read=read_npy)
