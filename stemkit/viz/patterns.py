"""Reading single patterns and building virtual images chunk by chunk, for interactive views.

A dashboard must never load a dask-backed cube whole. :class:`PatternReader` reads the one
chunk of whole patterns that holds the requested probe position and keeps the last few
decoded chunks, so neighbouring taps cost no I/O. :func:`virtual_image_blocks` splits a
virtual-image computation into pieces of a few chunks each, so a view can show progress
(and stop early when the detector changes again).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from stemkit.data.contract import K_DIMS, SCAN_DIMS

DIMS = (*SCAN_DIMS, *K_DIMS)


def check_cube(data: xr.DataArray) -> xr.DataArray:
    """Return ``data`` if it is a canonical 4D cube; raise a ``ValueError`` naming the problem otherwise."""
    if isinstance(data, xr.Dataset) and "intensity" in data:
        data = data["intensity"]
    if not isinstance(data, xr.DataArray) or tuple(data.dims) != DIMS:
        got = tuple(data.dims) if hasattr(data, "dims") else type(data).__name__
        raise ValueError(f"expected a 4D DataArray with dims {DIMS} (or a Dataset holding one as 'intensity'); got {got}")
    if isinstance(data.data, da.Array) and (len(data.chunks[2]) > 1 or len(data.chunks[3]) > 1):
        raise ValueError("a dask-backed cube must hold whole patterns per chunk (chunked over scan_y, scan_x only); "
                         "rechunk with data.chunk({'ky': -1, 'kx': -1})")
    return data


@dataclass(frozen=True)
class ChunkGrid:
    """Where each probe position lies among the chunks of a dask-backed cube."""

    y_edges: np.ndarray
    x_edges: np.ndarray

    @classmethod
    def of(cls, data: xr.DataArray) -> ChunkGrid:
        chunks_y, chunks_x = data.chunks[0], data.chunks[1]
        return cls(np.cumsum((0, *chunks_y)), np.cumsum((0, *chunks_x)))

    def block_of(self, iy: int, ix: int) -> tuple[int, int]:
        """Block indices (by, bx) of probe position (iy, ix)."""
        return int(np.searchsorted(self.y_edges, iy, side="right") - 1), int(np.searchsorted(self.x_edges, ix, side="right") - 1)

    def blocks(self) -> list[tuple[int, int]]:
        """Every block, row by row."""
        return [(by, bx) for by in range(len(self.y_edges) - 1) for bx in range(len(self.x_edges) - 1)]

    def slices(self, by: int, bx: int) -> tuple[slice, slice]:
        """Scan slices covered by block (by, bx)."""
        return slice(self.y_edges[by], self.y_edges[by + 1]), slice(self.x_edges[bx], self.x_edges[bx + 1])


class PatternReader:
    """One diffraction pattern at a time from a numpy- or dask-backed cube.

    Parameters
    ----------
    data
        Canonical 4D DataArray.
    cached_chunks
        Decoded dask chunks kept in memory (each is one chunk of whole patterns, about
        32 MiB for files written by :func:`stemkit.save`). A zarr cube written by
        :func:`stemkit.save` is sharded: one pattern is then read alone (its ~1 MiB inner
        chunk), not its whole dask chunk.
    """

    def __init__(self, data: xr.DataArray, *, cached_chunks: int = 2) -> None:
        self.data = check_cube(data)
        self.lazy = isinstance(self.data.data, da.Array)
        self._grid = ChunkGrid.of(self.data) if self.lazy else None
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached_chunks = max(1, int(cached_chunks))
        # a sharded zarr cube (stemkit.save) decodes one small inner chunk for one pattern: read just that
        self.reads_single_patterns = self.lazy and bool(self.data.encoding.get("shards"))

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.data.sizes["scan_y"], self.data.sizes["scan_x"]

    def pattern(self, iy: int, ix: int) -> np.ndarray:
        """The pattern at probe index (iy, ix) as a 2D numpy array ``(ky, kx)``."""
        n_y, n_x = self.scan_shape
        if not (0 <= iy < n_y and 0 <= ix < n_x):
            raise IndexError(f"probe index ({iy}, {ix}) is outside the scan of {n_y}×{n_x} positions")
        if not self.lazy:
            return np.asarray(self.data.data[iy, ix])
        by, bx = self._grid.block_of(iy, ix)
        if self.reads_single_patterns and (by, bx) not in self._cache:
            return np.asarray(self.data.data[iy, ix].compute(scheduler="synchronous"))
        block = self._chunk(by, bx)
        sy, sx = self._grid.slices(by, bx)
        return block[iy - sy.start, ix - sx.start]

    def chunk_mean(self, iy: int, ix: int) -> np.ndarray:
        """Mean pattern of the chunk holding (iy, ix); of the whole cube when it is in memory."""
        if not self.lazy:
            return np.asarray(self.data.data, dtype=np.float64).mean(axis=(0, 1))
        self.pattern(iy, ix)
        block = self._chunk(*self._grid.block_of(iy, ix))
        return block.reshape(-1, *block.shape[2:]).mean(axis=0, dtype=np.float64)

    def _chunk(self, by: int, bx: int) -> np.ndarray:
        key = (by, bx)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        block = np.asarray(self.data.data.blocks[by, bx].compute(scheduler="synchronous"))
        self._cache[key] = block
        while len(self._cache) > self._cached_chunks:
            self._cache.popitem(last=False)
        return block


def detector_weights(data: xr.DataArray, detector) -> np.ndarray:
    """The detector's weights on ``(ky, kx)`` as float32 (raises ``ValueError`` if it covers no pixel)."""
    weights = np.asarray(detector.mask(data).transpose(*K_DIMS).values, dtype=np.float32)
    if not np.any(weights):
        raise ValueError(f"the detector {detector!r} covers no detector pixel")
    return weights


def virtual_image_blocks(
    data: xr.DataArray, weights: np.ndarray, *, blocks_per_step: int = 4
) -> Iterator[tuple[list[tuple[slice, slice]], list]]:
    """Split the virtual image of ``weights`` into steps of a few chunks each.

    Yields
    ------
    slices, pieces
        Scan slices of each piece and a list of lazy (dask) or computed (numpy) 2D pieces;
        ``dask.compute(*pieces)`` gives the image values over those slices.
    """
    data = check_cube(data)
    if not isinstance(data.data, da.Array):
        values = np.tensordot(np.asarray(data.data, dtype=np.float32), weights, axes=2)
        yield [(slice(None), slice(None))], [values]
        return
    grid = ChunkGrid.of(data)
    blocks = grid.blocks()
    w = weights.astype(np.float32)
    for start in range(0, len(blocks), blocks_per_step):
        step = blocks[start:start + blocks_per_step]
        pieces = [da.tensordot(data.data.blocks[by, bx].astype(np.float32), w, axes=2) for by, bx in step]
        yield [grid.slices(by, bx) for by, bx in step], pieces


def percentile_limits(values: np.ndarray, limits: tuple[float, float], *, log: bool) -> tuple[float, float]:
    """Colour limits at the given percentiles of the finite (and, for log, positive) values."""
    finite = values[np.isfinite(values)]
    if log:
        finite = finite[finite > 0]
    if finite.size == 0:
        return (1.0, 10.0) if log else (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(finite, limits))
    if high <= low:
        high = low * 10 if (log and low > 0) else low + 1.0
    return low, high


def scan_index(data: xr.DataArray, x: float, y: float) -> tuple[int, int]:
    """The probe index (iy, ix) nearest to the scan position (x, y) in nm, clipped to the scan."""
    return _nearest(data["scan_y"].values, y), _nearest(data["scan_x"].values, x)


def _nearest(axis: np.ndarray, value: float) -> int:
    step = axis[1] - axis[0] if axis.size > 1 else 1.0
    return int(np.clip(np.rint((value - axis[0]) / step), 0, axis.size - 1))
