"""Per-pattern kernels run over the scan in batches: in memory, or chunk by chunk on dask.

A kernel maps a ``(n_y, n_x, ky, kx)`` numpy block to a ``(n_y, n_x, ...)`` block. The
same kernel serves numpy data (in batches of rows, so temporary arrays stay small) and
dask data (once per chunk of whole patterns, via ``map_blocks``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

BATCH_BYTES = 64 * 2**20

Kernel = Callable[[np.ndarray], np.ndarray]


def map_patterns(
    data: xr.DataArray, kernel: Kernel, *, out_shape: tuple[int, ...], dtype: Any, workers: int = 1
) -> Any:
    """Apply ``kernel`` to every pattern of ``data``; return a numpy or dask array ``(n_y, n_x, *out_shape)``.

    Parameters
    ----------
    data
        Canonical 4D DataArray.
    kernel
        Function of a ``(n_y, n_x, ky, kx)`` block returning ``(n_y, n_x, *out_shape)``.
    out_shape
        Trailing shape of the kernel's output per pattern.
    dtype
        Output dtype.
    workers
        For numpy data: how many batches to run at once in threads (the kernel must release
        the GIL for this to help, and be thread-safe). Dask data use dask's scheduler.
    """
    array = data.data
    if isinstance(array, da.Array):
        new_axes = {2 + i: n for i, n in enumerate(out_shape)}
        return da.map_blocks(
            kernel,
            array,
            dtype=dtype,
            drop_axis=[2, 3],
            new_axis=list(new_axes) if new_axes else None,
            chunks=(*array.chunks[:2], *((n,) for n in out_shape)),
            meta=np.empty((0,) * (2 + len(out_shape)), dtype=dtype),
        )
    n_y, n_x = array.shape[:2]
    rows_per_batch = max(1, BATCH_BYTES // max(1, array[0].nbytes * 4))
    if workers > 1:  # at least one batch per worker
        rows_per_batch = max(1, min(rows_per_batch, -(-n_y // workers)))
    out = np.empty((n_y, n_x, *out_shape), dtype=dtype)

    def run(start: int) -> None:
        stop = min(n_y, start + rows_per_batch)
        out[start:stop] = kernel(np.asarray(array[start:stop]))

    starts = range(0, n_y, rows_per_batch)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(workers, len(starts))) as pool:
            list(pool.map(run, starts))
    else:
        for start in starts:
            run(start)
    return out
