"""stemkit's own files: DataArrays and result Datasets in zarr or netCDF, round-tripped exactly.

What the file holds is recorded in global attributes (``stemkit_kind``: DataArray or
Dataset, and the DataArray's name), every attribute goes through :mod:`attrs_codec`,
and fixed-width string variables record their dtype, so that ``load(save(x)) == x``
down to dims, coordinates, attrs and dtypes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stemkit.data.contract import DIMS
from stemkit.io.attrs_codec import decode_attrs, encode_attrs
from stemkit.io.lazy import inner_chunks, pattern_chunks

KIND_ATTR = "stemkit_kind"
NAME_ATTR = "stemkit_dataarray_name"
DTYPE_ATTR = "stemkit_dtype"
NO_NAME = "__stemkit_unnamed__"
# Variable-length text as xarray and h5py mark it: with the element type in the dtype, xarray writes a
# dask-backed string variable chunk by chunk instead of computing it first to find out what it holds.
VLEN_STR = np.dtype("O", metadata={"element_type": str})
ZARR_SUFFIXES = (".zarr",)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


def native_format(path: Path) -> str | None:
    """``"zarr"``, ``"netcdf"`` or ``None`` from the path's suffix."""
    suffix = path.suffix.lower()
    if suffix in ZARR_SUFFIXES:
        return "zarr"
    if suffix in NETCDF_SUFFIXES:
        return "netcdf"
    return None


# -- writing ------------------------------------------------------------------------
def write_native(obj: xr.DataArray | xr.Dataset, path: Path, *, overwrite: bool) -> Path:
    """Write ``obj`` to ``path`` (zarr or netCDF by suffix) without ever losing an existing file.

    The file is written next to the target under a temporary name and moved into place
    only once complete, so a failed or interrupted save leaves what was there untouched.
    """
    fmt = native_format(path)
    if fmt is None:
        raise ValueError(
            f"cannot tell the format from {path.name!r}; save to a path ending in .zarr (chunked, best for "
            "large or lazy data) or .nc (netCDF, one file)"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another path")
    dataset = _to_storable_dataset(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        if fmt == "zarr":
            dataset.to_zarr(tmp, mode="w", encoding=_zarr_encoding(dataset), consolidated=False)
        else:
            dataset.to_netcdf(tmp, engine="h5netcdf", encoding=_netcdf_encoding(dataset))
        _replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return path


def _to_storable_dataset(obj: xr.DataArray | xr.Dataset) -> xr.Dataset:
    if isinstance(obj, xr.DataArray):
        name = obj.name if obj.name is not None else NO_NAME
        dataset = obj.to_dataset(name=name, promote_attrs=False)
        dataset.attrs = {KIND_ATTR: "DataArray", NAME_ATTR: str(name)}
    elif isinstance(obj, xr.Dataset):
        dataset = obj.copy(deep=False)
        dataset.attrs = {**encode_attrs(obj.attrs), KIND_ATTR: "Dataset"}
    else:
        raise TypeError(f"stemkit.save writes xarray DataArrays and Datasets; got {type(obj).__name__}")
    fixed_width = {name: v.dtype.str for name, v in dataset.variables.items() if v.dtype.kind == "U"}
    # Fixed-width unicode is stored as variable-length text (specified in zarr v3 and netCDF-4);
    # its numpy dtype is recorded and restored on load.
    dataset = dataset.assign({n: dataset[n].astype(VLEN_STR) for n in fixed_width if n in dataset.data_vars})
    dataset = dataset.assign_coords({n: dataset[n].astype(VLEN_STR) for n in fixed_width if n in dataset.coords})
    for name, variable in dataset.variables.items():
        variable.attrs = encode_attrs(variable.attrs)
        if name in fixed_width:
            variable.attrs[DTYPE_ATTR] = fixed_width[name]
    return dataset


def _zarr_encoding(dataset: xr.Dataset) -> dict[str, dict[str, Any]]:
    """4D cubes are sharded: shards of ~32 MiB of whole patterns (the dask chunks), inner chunks of a few patterns."""
    encoding = {}
    for name, variable in dataset.data_vars.items():
        if variable.dims != DIMS:
            continue
        if variable.chunks is None:
            shard = pattern_chunks(variable.shape, variable.dtype.itemsize)
        elif _regular(variable.chunks):
            shard = tuple(sizes[0] for sizes in variable.chunks)
        else:
            continue  # irregular dask chunks: stored as they are, one zarr chunk each
        encoding[name] = {"chunks": inner_chunks(shard), "shards": shard}
    return encoding


def _regular(chunks: tuple[tuple[int, ...], ...]) -> bool:
    """Every chunk along each axis the same size but the last, which may be smaller."""
    return all(len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0] for sizes in chunks)


def _netcdf_encoding(dataset: xr.Dataset) -> dict[str, dict[str, Any]]:
    encoding = {}
    for name, variable in dataset.data_vars.items():
        if variable.dims == DIMS:
            encoding[name] = {"chunksizes": pattern_chunks(variable.shape, variable.dtype.itemsize)}
    return encoding


def _replace(new: Path, target: Path) -> None:
    """Move ``new`` onto ``target``; an existing target is removed only after the move succeeds."""
    if not target.exists():
        os.replace(new, target)
        return
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, backup)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(backup, target)
        raise
    if backup.is_dir():
        shutil.rmtree(backup)
    else:
        backup.unlink()


# -- reading ------------------------------------------------------------------------
def read_native(path: Path, fmt: str, *, lazy: bool) -> xr.DataArray | xr.Dataset:
    """Read a file written by :func:`write_native` (or any zarr/netCDF holding an xarray Dataset)."""
    if fmt == "zarr":
        dataset = xr.open_zarr(path, chunks=_zarr_dask_chunks(path) if lazy else None, consolidated=False)
    else:
        dataset = xr.open_dataset(path, engine="h5netcdf", chunks={} if lazy else None)
    if not lazy:
        dataset = dataset.load()
        dataset.close()
    return _from_stored_dataset(dataset)


def _zarr_dask_chunks(path: Path) -> dict[str, int]:
    """Dask chunks of a lazy zarr read: the shards of a sharded cube (reads of one pattern still decode only
    its inner chunk), otherwise the stored chunks."""
    with xr.open_zarr(path, chunks=None, consolidated=False) as probe:
        for variable in probe.data_vars.values():
            shards = variable.encoding.get("shards")
            if shards:
                return dict(zip(variable.dims, shards))
    return {}


def _from_stored_dataset(dataset: xr.Dataset) -> xr.DataArray | xr.Dataset:
    restore = {}
    for name, variable in dataset.variables.items():
        variable.attrs = decode_attrs(variable.attrs)
        if DTYPE_ATTR in variable.attrs:
            restore[name] = variable.attrs.pop(DTYPE_ATTR)
    dataset = dataset.assign({n: dataset[n].astype(d) for n, d in restore.items() if n in dataset.data_vars})
    dataset = dataset.assign_coords({n: dataset[n].astype(d) for n, d in restore.items() if n in dataset.coords})
    global_attrs = decode_attrs(dataset.attrs)
    kind = global_attrs.pop(KIND_ATTR, "Dataset")
    if kind == "DataArray":
        name = global_attrs.pop(NAME_ATTR)
        array = dataset[name]
        array.attrs = dict(array.attrs)
        return array.rename(None if name == NO_NAME else name)
    dataset.attrs = global_attrs
    return dataset


def stored_nbytes(path: Path, fmt: str) -> int:
    """Uncompressed size in bytes of everything in the file, read from its metadata only."""
    opener = (lambda: xr.open_zarr(path, chunks={}, consolidated=False)) if fmt == "zarr" else (
        lambda: xr.open_dataset(path, engine="h5netcdf", chunks={})
    )
    with opener() as dataset:
        return int(dataset.nbytes)
