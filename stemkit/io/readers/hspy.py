"""HyperSpy ``.hspy`` files (HDF5), read with ``rsciio.hspy``.

Layout (HyperSpy HDF5 specification): ``/Experiments/<title>/data`` holds the array and
``axis-0``, ``axis-1``, ... its axes in array order, each with ``size``, ``scale``,
``offset``, ``units`` and ``navigate`` (navigation = scan, signal = detector); a
calibrated value is ``offset + index * scale``. ``metadata/Acquisition_instrument/TEM``
holds ``beam_energy`` (keV), ``camera_length``, ``convergence_angle`` (mrad) and
``Detector/Diffraction/exposure_time`` (s).

Axis mapping: the navigation axes, in array order, are ``(scan_y, scan_x)`` and the
signal axes ``(ky, kx)``, as stored; a file whose signal axes come first in the array is
transposed to put them last (the ``navigate`` flags say which is which). One navigation
axis gives a flat stack of patterns. No flips.

Calibrations: from the axes' ``scale`` and ``units`` (nm, µm, Å; 1/nm, 1/Å, and mrad/rad
with the beam energy), the direct-beam pixel from the signal axes' ``offset`` when not 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemkit.io.errors import FileFormatError
from stemkit.io.formats import Format
from stemkit.io.rawcube import RawCube
from stemkit.io.readers._common import (
    H5Array,
    as_transposed_array,
    clean_attrs,
    is_hdf5,
    is_uncalibrated,
    k_step,
    pair,
    open_h5,
    positive,
    scan_step,
)


def read_hspy(path: Path, *, lazy: bool) -> RawCube:
    """Read a HyperSpy ``.hspy`` file; see the module docstring."""
    if not is_hdf5(path):
        raise FileFormatError(f"{path} is not a HyperSpy .hspy file: it does not start with the HDF5 signature")
    signal = _pick_signal(path, _parse(path))
    axes, order = _ordered_axes(path, signal["axes"])
    source = _dataset(path, tuple(signal["data"].shape), signal["data"].dtype)
    tem = _lookup(signal.get("metadata", {}), "Acquisition_instrument", "TEM") or {}
    energy = positive(tem.get("beam_energy"))
    return RawCube(
        array=as_transposed_array(source, tuple(order), lazy=lazy, name="hspy"),
        scan_step_nm=pair(*(scan_step(a["scale"], a["units"]) for a in axes[:2])) if len(axes) == 4 else None,
        k_step=pair(*(k_step(a["scale"], a["units"], energy) for a in axes[-2:])),
        beam_energy_kev=energy,
        k_origin=_k_origin(axes[-2:]),
        attrs=_attrs(path, signal, tem),
    )


def _parse(path: Path) -> list[dict]:
    """The signals as rosettasciio reads them (lazily: their metadata and axes, not their data)."""
    from rsciio.hspy import file_reader

    try:
        return file_reader(str(path), lazy=True)
    except Exception as exc:
        raise FileFormatError(
            f"{path}: rosettasciio could not read it as a HyperSpy file ({type(exc).__name__}: {exc}); "
            "it may be truncated, damaged or another HDF5 layout"
        ) from exc


def _pick_signal(path: Path, signals: list[dict]) -> dict:
    candidates = [s for s in signals if np.ndim(s["data"]) in (3, 4)]
    if not candidates:
        shapes = [tuple(np.shape(s["data"])) for s in signals]
        raise FileFormatError(f"{path} holds no 3D or 4D signal (shapes {shapes}); stemkit needs 4D-STEM data")
    chosen = max(candidates, key=lambda s: (np.ndim(s["data"]), int(np.prod(np.shape(s["data"])))))
    if np.dtype(chosen["data"].dtype).kind not in "iuf":
        raise FileFormatError(f"{path} holds dtype {chosen['data'].dtype}; stemkit needs real intensities")
    return chosen


def _dataset(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> H5Array:
    """The ``/Experiments/<title>/data`` dataset holding the chosen signal."""
    with open_h5(path, "HyperSpy .hspy") as handle:
        experiments = handle.get("Experiments")
        for name in experiments or ():
            data = experiments[name].get("data")
            if data is not None and tuple(data.shape) == shape:
                return H5Array(str(path), data.name, shape, np.dtype(dtype))
    raise FileFormatError(f"{path}: no /Experiments/<title>/data dataset of shape {shape}")


def _ordered_axes(path: Path, axes: list[dict]) -> tuple[list[dict], list[int]]:
    """The axes with navigation first and signal last, and the array transpose that does it."""
    navigate = [bool(a.get("navigate", i < len(axes) - 2)) for i, a in enumerate(axes)]
    order = [i for i, nav in enumerate(navigate) if nav] + [i for i, nav in enumerate(navigate) if not nav]
    if navigate.count(False) != 2:
        raise FileFormatError(
            f"{path} has {navigate.count(False)} signal axes; stemkit needs a signal of 2D diffraction patterns "
            "(axes with navigate=False)"
        )
    return [axes[i] for i in order], order


def _k_origin(axes: list[dict]) -> tuple[float, float] | None:
    if any(is_uncalibrated(a["units"]) or not float(a["scale"]) for a in axes):
        return None
    origins = [-float(a["offset"]) / float(a["scale"]) for a in axes]
    return None if all(o == 0.0 for o in origins) else (origins[0], origins[1])


def _lookup(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _attrs(path: Path, signal: dict, tem: dict) -> dict:
    metadata = signal.get("metadata", {})
    return clean_attrs(
        {
            "source": str(path),
            "format": "hspy",
            "title": _lookup(metadata, "General", "title"),
            "signal_type": _lookup(metadata, "Signal", "signal_type"),
            "camera_length": tem.get("camera_length"),
            "convergence_mrad": positive(tem.get("convergence_angle")),
            "exposure_s": _lookup(tem, "Detector", "Diffraction", "exposure_time"),
            "microscope": tem.get("microscope"),
            "hyperspy_version": signal.get("package_version"),
        }
    )


FORMAT = Format(name="hspy", description="HyperSpy HDF5 (.hspy)", suffixes=(".hspy",), read=read_hspy)
