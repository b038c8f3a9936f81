"""``stemkit.save``: DataArrays and result Datasets to zarr or netCDF, exactly round-tripped."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from stemkit.io.native import write_native


def save(obj: xr.DataArray | xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a DataArray or Dataset to zarr (``.zarr``) or netCDF (``.nc``).

    Parameters
    ----------
    obj
        A canonical 4D DataArray, a peak or result Dataset, or any xarray object.
        Dask-backed data are written chunk by chunk without loading them whole.
    path
        Destination; its suffix chooses the format.
    overwrite
        Replace an existing file. Without it, an existing path raises ``FileExistsError``.
        Either way the new file is complete before the old one is removed, so an
        error during writing never loses what was there.

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    ``stemkit.load(path)`` gives back an object identical to ``obj``: dims, coordinates,
    attributes (including booleans, ``None`` and nested dicts) and dtypes.
    """
    return write_native(obj, Path(path).expanduser(), overwrite=overwrite)
