"""``stemkit.load``: any supported file to the canonical DataArray (or a saved result Dataset)."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from stemkit.data.validate import validate
from stemkit.io import lazy as lazy_rules
from stemkit.io.errors import FileFormatError, MissingCalibrationError
from stemkit.io.formats import Format, registered_formats
from stemkit.io.native import native_format, read_native, stored_nbytes

Pair = float | tuple[float, float]


def load(
    path: str | os.PathLike,
    *,
    lazy: bool | None = None,
    beam_energy_kev: float | None = None,
    k_step: Pair | None = None,
    scan_step_nm: Pair | None = None,
    k_origin: tuple[float, float] | None = None,
    scan_shape: tuple[int, int] | None = None,
    format: str | None = None,
) -> xr.DataArray | xr.Dataset:
    """Read a 4D-STEM file into the canonical DataArray.

    Parameters
    ----------
    path
        The file (or, for zarr, the directory). The format is chosen by suffix and, for
        shared suffixes such as ``.h5``, by looking inside the file.
    lazy
        Return a dask-backed DataArray chunked by whole patterns. Default: lazy when the
        pixel data exceed 1 GiB (``stemkit.io.lazy.LAZY_THRESHOLD_BYTES``).
    beam_energy_kev, k_step, scan_step_nm, k_origin
        Calibrations that override (or supply what is missing from) the file: beam energy
        in keV, detector pixel size in 1/Å, probe step in nm, and the detector pixel
        (row, column) of the direct beam.
    scan_shape
        ``(n_y, n_x)`` to reshape a file that stores a flat stack of patterns (or to
        re-shape one whose header is wrong).
    format
        Force a format by name (see :func:`supported_formats`) instead of guessing.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        The canonical ``(scan_y, scan_x, ky, kx)`` DataArray; a zarr or netCDF file written
        by :func:`stemkit.save` comes back as whatever was saved.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    FileFormatError
        The file is truncated, corrupt or not of a supported format.
    MissingCalibrationError
        The file lacks the beam energy, the detector step or the scan shape, and no
        argument gave it.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no file or directory at {path}; check the path (working directory: {Path.cwd()})")
    native = native_format(path) if format in (None, "zarr", "netcdf") else None
    if native is not None or format in ("zarr", "netcdf"):
        _refuse_calibrations_for_native(path, beam_energy_kev, k_step, scan_step_nm, k_origin, scan_shape)
        return _load_native(path, format or native, lazy)
    fmt = find_format(path, format)
    if lazy is None:
        lazy = sum(f.stat().st_size for f in fmt.data_files(path) if f.exists()) > lazy_rules.LAZY_THRESHOLD_BYTES
    raw = _read(fmt, path, lazy)
    data = raw.to_datacube(
        str(path),
        beam_energy_kev=beam_energy_kev,
        k_step=k_step,
        scan_step_nm=scan_step_nm,
        k_origin=k_origin,
        scan_shape=scan_shape,
    )
    return validate(data, check_values=False)


def supported_formats() -> dict[str, str]:
    """Format names (for ``load(..., format=)``) and what each is."""
    formats = {f.name: f"{f.description}" for f in registered_formats()}
    formats["zarr"] = "stemkit zarr store (.zarr)"
    formats["netcdf"] = "stemkit netCDF file (.nc)"
    return formats


def find_format(path: Path, name: str | None = None) -> Format:
    """The format that reads ``path``: by ``name`` if given, else by suffix and content."""
    formats = registered_formats()
    if name is not None:
        for fmt in formats:
            if fmt.name == name:
                return fmt
        raise ValueError(f"unknown format {name!r}; choose one of {sorted(supported_formats())}")
    suffix = path.suffix.lower()
    candidates = [f for f in formats if suffix in f.suffixes]
    if not candidates:
        known = sorted({s for f in formats for s in f.suffixes} | {".zarr", ".nc"})
        raise FileFormatError(
            f"stemkit cannot tell the format of {path.name!r} from its suffix {suffix!r}; "
            f"supported suffixes: {', '.join(known)}. Pass format=... to force one ({sorted(supported_formats())})"
        )
    if len(candidates) == 1 and candidates[0].sniff is None:
        return candidates[0]
    for fmt in candidates:
        if fmt.sniff is None or _sniff(fmt, path):
            return fmt
    names = ", ".join(f.description for f in candidates)
    raise FileFormatError(f"{path} has suffix {suffix!r} but is none of the formats that use it ({names})")


def _sniff(fmt: Format, path: Path) -> bool:
    try:
        return bool(fmt.sniff(path))
    except Exception:
        return False


def _read(fmt: Format, path: Path, lazy: bool):
    try:
        return fmt.read(path, lazy=lazy)
    except (FileFormatError, MissingCalibrationError, FileNotFoundError):
        raise
    except Exception as exc:
        raise FileFormatError(
            f"could not read {path} as {fmt.description}: {type(exc).__name__}: {exc}. "
            "The file may be truncated or corrupt, or of another format (force one with format=...)."
        ) from exc


def _load_native(path: Path, fmt: str, lazy: bool | None) -> xr.DataArray | xr.Dataset:
    try:
        if lazy is None:
            lazy = stored_nbytes(path, fmt) > lazy_rules.LAZY_THRESHOLD_BYTES
        return read_native(path, fmt, lazy=lazy)
    except Exception as exc:
        raise FileFormatError(
            f"could not read {path} as a {fmt} store: {type(exc).__name__}: {exc}. "
            "Is it complete, and was it written by stemkit.save or xarray?"
        ) from exc


def _refuse_calibrations_for_native(path: Path, *values: object) -> None:
    if any(v is not None for v in values):
        raise ValueError(
            f"{path.name} was saved by stemkit with its calibrations; to change them, edit the loaded object "
            "(e.g. data.assign_coords(...) or data.attrs['beam_energy_kev'] = ...) instead of passing them to load"
        )
