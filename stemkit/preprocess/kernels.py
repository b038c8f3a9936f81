"""Per-pattern kernels run over the scan in batches: in memory, or chunk by chunk on dask.

A kernel maps a ``(n_y, n_x, ky, kx)`` numpy block to a ``(n_y, n_x, ...)`` block. The
same kernel serves numpy data (in batches of rows, so temporary arrays stay small) and
dask data (once per chunk of whole patterns, via ``map_blocks``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

BATCH_BYTES = 64 * 2**20

Kernel = Callable[[np.ndarray], np.ndarray]


def map_patterns(data: xr.DataArray, kernel: Kernel, *, out_shape: tuple[int, ...], dtype: Any) -> Any:
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
    out = np.empty((n_y, n_x, *out_shape), dtype=dtype)
    for start in range(0, n_y, rows_per_batch):
        stop = min(n_y, start + rows_per_batch)
        out[start:stop] = kernel(np.asarray(array[start:stop]))
    return out
