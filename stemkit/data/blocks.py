"""Lazy results computed block of scan rows by block, with what every block shares in the graph once.

A per-pattern method (an orientation model, a strain model) maps a large scan a block of scan
rows at a time. Run lazily, each block becomes one dask task, on threads or on the worker
processes of a ``dask.distributed`` cluster. What every block needs (the fitted estimator:
its weights, tables, calibrations) enters the task graph **once**, as one key of its own that
each block depends on: a distributed scheduler then sends it to each worker once, not with
every task (passing it as a plain argument would copy it into every task).

:func:`map_row_blocks` builds such a result as an ``xarray.Dataset`` of dask arrays, chunked
like the input's scan rows; :func:`stemkit.io.save_by_chunks` writes it to zarr block by block
(resumably), ``.compute()`` gathers it in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed

ROW_DIM = "scan_y"


def shared(obj: Any) -> Delayed:
    """``obj`` as one key of a dask graph, for every block of a :func:`map_row_blocks` to depend on."""
    return dask.delayed(obj, pure=True, traverse=False)


def on_a_cluster() -> bool:
    """Whether computations go to a ``dask.distributed`` client (the default client of this process)."""
    try:
        from distributed import default_client
    except ImportError:
        return False
    try:
        default_client()
    except ValueError:
        return False
    return True


def in_row_blocks(data: xr.DataArray | xr.Dataset, patterns_per_block: int) -> xr.DataArray | xr.Dataset:
    """``data`` dask-backed in blocks of whole scan rows of at least about ``patterns_per_block`` patterns.

    Numpy-backed input is cut into blocks of that many patterns (whole rows). Dask-backed input
    keeps its ``scan_y`` chunks where they are as large or larger (its chunking is the memory a
    block may take), and smaller chunks are merged up to that size (a block per small chunk
    would cost more in overhead than it computes); ``scan_x`` chunks are merged into whole rows.
    """
    rows = max(1, patterns_per_block // max(1, data.sizes["scan_x"]))
    if data.chunks is not None and len(data.chunks) > 0 and max(_row_chunks(data)) >= rows:
        return data.chunk({"scan_x": -1})
    return data.chunk({ROW_DIM: rows, "scan_x": -1})


def map_row_blocks(
    func: Callable[..., xr.Dataset],
    data: xr.DataArray | xr.Dataset,
    *objects: Delayed,
    name: str = "block",
    halo: int = 0,
) -> xr.Dataset:
    """The lazy Dataset whose rows ``a:b`` are ``func(data[a:b] in memory, *objects)``.

    With a ``halo``, ``func`` sees ``data[a - halo:b + halo]`` (cut at the scan's edges) and its
    answer for the extra rows is dropped: for work whose answer at a row depends on the rows
    around it.

    Parameters
    ----------
    func
        Maps an in-memory block of scan rows of ``data`` (and the shared objects) to a Dataset
        whose every variable runs along ``scan_y`` first, with the block's rows.
    data
        Dask-backed along ``scan_y`` (see :func:`in_row_blocks`); each ``scan_y`` chunk is a block.
    *objects
        Shared objects from :func:`shared`: one key each in the graph, whatever the number of
        blocks.
    name
        Prefix of the tasks' names (what a dask dashboard shows).
    halo
        Rows read beyond each block's edges (0: none).

    Returns
    -------
    xarray.Dataset
        Dask-backed, chunked like ``data``'s scan rows, with the variables, dtypes, coordinates
        and attrs of ``func``'s answer for the first row (computed here, once, to learn them).
    """
    if data.chunks is None or not data.chunks:
        raise ValueError("map_row_blocks needs dask-backed data; chunk it first with in_row_blocks(data, n)")
    if halo < 0:
        raise ValueError(f"map_row_blocks: halo must be 0 or more rows; got {halo}")
    here = dask.compute(*objects, scheduler="sync")  # the first row runs here: nothing is shipped for it
    first = func(data.isel({ROW_DIM: slice(0, 1)}).compute(), *here)
    _check_rows(first)
    edges = np.cumsum((0, *_row_chunks(data)))
    apply = dask.delayed(_apply, pure=True)
    token = _token(data, objects)
    rows = int(edges[-1])
    parts = [apply(func, _unwrapped(data.isel({ROW_DIM: slice(max(0, int(a) - halo), min(rows, int(b) + halo))})),
                   *objects, (int(a) - max(0, int(a) - halo), int(b - a)), dask_key_name=f"{name}-{i}-{token}-{halo}")
             for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    variables = {}
    for var, template in first.data_vars.items():
        pieces = [da.from_delayed(dask.delayed(_values, pure=True)(part, var), dtype=template.dtype,
                                  shape=(int(b - a), *template.shape[1:]))
                  for part, a, b in zip(parts, edges[:-1], edges[1:])]
        variables[var] = (template.dims, da.concatenate(pieces, axis=0), template.attrs)
    coords = {n: c for n, c in first.coords.items() if ROW_DIM not in c.dims}
    coords |= {n: c for n, c in data.coords.items() if c.dims == (ROW_DIM,)}
    return xr.Dataset(variables, coords=coords, attrs=first.attrs)


def _unwrapped(block: xr.DataArray | xr.Dataset) -> tuple:
    """``block`` as plain containers of its dask arrays and small numpy coordinates.

    A lazy xarray object handed to ``dask.delayed`` as a whole takes its source's whole graph
    (for numpy input: the whole array) into every task that finalises it; its dask arrays alone
    bring only their own chunks.
    """
    coords = {n: (c.dims, np.asarray(c.values), c.attrs) for n, c in block.coords.items()}
    if isinstance(block, xr.DataArray):
        return ("DataArray", block.name, block.dims, block.data, coords, block.attrs)
    variables = {n: (v.dims, v.data, v.attrs) for n, v in block.data_vars.items()}
    return ("Dataset", variables, coords, block.attrs)


def _rewrapped(parts: tuple) -> xr.DataArray | xr.Dataset:
    """The in-memory xarray object of :func:`_unwrapped`'s computed parts."""
    if parts[0] == "DataArray":
        _, name, dims, values, coords, attrs = parts
        return xr.DataArray(values, dims=dims, coords=coords, name=name, attrs=attrs)
    _, variables, coords, attrs = parts
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _apply(func: Callable[..., xr.Dataset], parts: tuple, *objects_and_rows: Any) -> xr.Dataset:
    """``func`` on a block; of its answer, the ``rows = (first, count)`` that are the block's own (not the halo's)."""
    *objects, (first, count) = objects_and_rows
    answer = func(_rewrapped(parts), *objects)
    return answer.isel({ROW_DIM: slice(first, first + count)})


def _row_chunks(data: xr.DataArray | xr.Dataset) -> tuple[int, ...]:
    if isinstance(data, xr.Dataset):
        return data.chunks[ROW_DIM]
    return data.chunks[data.dims.index(ROW_DIM)]


def _token(data: xr.DataArray | xr.Dataset, objects: tuple[Delayed, ...]) -> str:
    return dask.base.tokenize(data, *[o.key for o in objects])


def _values(block: xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(block[name].values)


def _check_rows(first: xr.Dataset) -> None:
    for var, values in first.data_vars.items():
        if values.dims[:1] != (ROW_DIM,):
            raise ValueError(f"map_row_blocks: the function's variable {var!r} has dims {values.dims}; every "
                             f"variable must run along {ROW_DIM!r} first")
