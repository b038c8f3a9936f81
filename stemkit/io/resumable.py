"""``save_by_chunks``: write a lazy result to zarr block by block, so that an interrupted run can resume.

:func:`stemkit.save` writes next to the target and moves the file into place when it is
complete: safe, but a run stopped after hours leaves nothing. For long computations over a
large scan (orientation maps, virtual images, clustering features) :func:`save_by_chunks`
writes the target itself, one block of scan rows at a time, in the order of the dask chunks:

- the store's metadata and every variable that does not run along ``scan_y`` are written first;
- each block of rows is computed (on whatever dask scheduler is active, e.g. a
  ``dask.distributed`` client) and written to its region, then recorded as done in a
  progress folder beside the store (``.NAME.zarr.stemkit-progress``);
- an interrupted store is readable: finished rows hold their values, the rest the fill
  value (NaN for floating point);
- calling again with the same result resumes: finished blocks are skipped; a different
  result (other variables, shapes or blocks) is refused rather than mixed in;
- when every block is written the progress folder is removed; the store is then an
  ordinary stemkit zarr file (``stemkit.load`` reads it back exactly).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import xarray as xr

from stemkit.data.blocks import ROW_DIM
from stemkit.io.native import _to_storable_dataset, _zarr_encoding, native_format

PROGRESS_SUFFIX = ".stemkit-progress"
PLAN_FILE = "plan.json"


def save_by_chunks(
    obj: xr.DataArray | xr.Dataset,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    on_block: Callable[[int, int], None] | None = None,
) -> Path:
    """Compute a lazy result and write it to a ``.zarr`` store block of scan rows by block, resumably.

    Parameters
    ----------
    obj
        A DataArray or Dataset (dask-backed, chunked along ``scan_y``; numpy-backed works too,
        as one block).
    path
        Destination ending in ``.zarr``.
    overwrite
        Replace a complete store at ``path``. An unfinished store written by this function
        for the same result is resumed without it.
    on_block
        Called as ``on_block(done, total)`` after each block is written (progress).

    Returns
    -------
    pathlib.Path
        The store, complete.
    """
    path = Path(path).expanduser()
    if native_format(path) != "zarr":
        raise ValueError(f"save_by_chunks writes zarr stores; give a path ending in .zarr, not {path.name!r}")
    dataset = _to_storable_dataset(obj)
    blocks = _row_blocks(dataset)
    plan = _plan(dataset, blocks)
    progress = progress_dir(path)
    if path.exists():
        _check_existing(path, progress, plan, overwrite)
    if not progress.is_dir():
        _start(dataset, path, progress, plan)
    rows = [name for name, variable in dataset.variables.items() if ROW_DIM in variable.dims]
    along_rows = dataset[[n for n in rows if n in dataset.data_vars]]
    along_rows = along_rows.drop_vars([n for n in along_rows.coords if ROW_DIM not in along_rows[n].dims])
    for index, (start, stop) in enumerate(blocks):
        marker = progress / f"rows-{start}-{stop}"
        if not marker.exists():
            block = along_rows.isel({ROW_DIM: slice(start, stop)}).compute()
            block.to_zarr(path, region={ROW_DIM: slice(start, stop)}, mode="r+", consolidated=False)
            marker.touch()
        if on_block is not None:
            on_block(index + 1, len(blocks))
    shutil.rmtree(progress)
    return path


def unfinished_blocks(path: str | os.PathLike) -> list[tuple[int, int]]:
    """The row blocks ``(start, stop)`` of an interrupted :func:`save_by_chunks` store still to write
    (empty for a complete store)."""
    progress = progress_dir(Path(path))
    if not progress.is_dir():
        return []
    plan = json.loads((progress / PLAN_FILE).read_text())
    return [(a, b) for a, b in plan["blocks"] if not (progress / f"rows-{a}-{b}").exists()]


def progress_dir(path: Path) -> Path:
    """The folder beside an unfinished store that records its plan and finished blocks."""
    return path.with_name(f".{path.name}{PROGRESS_SUFFIX}")


def _row_blocks(dataset: xr.Dataset) -> list[tuple[int, int]]:
    if ROW_DIM not in dataset.dims:
        raise ValueError(f"save_by_chunks writes results over the scan; this object has no {ROW_DIM!r} dimension "
                         f"(dims {tuple(dataset.dims)}); use stemkit.save")
    chunks = dataset.chunks.get(ROW_DIM) if dataset.chunks else None
    sizes = chunks or (dataset.sizes[ROW_DIM],)
    edges = [0]
    for size in sizes:
        edges.append(edges[-1] + int(size))
    return list(zip(edges[:-1], edges[1:]))


def _plan(dataset: xr.Dataset, blocks: list[tuple[int, int]]) -> dict:
    """What the store will hold: enough to refuse resuming with another result."""
    return {"variables": {name: {"dims": list(v.dims), "shape": list(v.shape), "dtype": str(v.dtype)}
                          for name, v in sorted(dataset.variables.items())},
            "blocks": [list(b) for b in blocks]}


def _check_existing(path: Path, progress: Path, plan: dict, overwrite: bool) -> None:
    if progress.is_dir():
        written = json.loads((progress / PLAN_FILE).read_text()) if (progress / PLAN_FILE).is_file() else None
        if written == plan:
            return  # resume
        raise FileExistsError(f"{path} is an unfinished save_by_chunks store of another result (other variables, "
                              f"shapes or chunks); resume it with the same result, or remove it yourself")
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    _remove(path)  # only a complete store is replaced: the new one is written in its place


def _start(dataset: xr.Dataset, path: Path, progress: Path, plan: dict) -> None:
    """Write the metadata and everything not along the rows; then the plan (which marks the store as ours)."""
    other = [n for n, v in dataset.variables.items() if ROW_DIM not in v.dims and n not in dataset.dims]
    dataset = dataset.assign({n: dataset[n].compute() for n in other if n in dataset.data_vars})
    dataset.to_zarr(path, mode="w-", compute=False, encoding=_zarr_encoding(dataset), consolidated=False)
    progress.mkdir()
    (progress / PLAN_FILE).write_text(json.dumps(plan))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
