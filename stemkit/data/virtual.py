"""Virtual detectors as weight masks on the detector plane, applied lazily."""

from __future__ import annotations

import numpy as np
import xarray as xr

from stemkit.data.contract import K_DIMS


def k_radius(data: xr.DataArray, center: tuple[float, float] = (0.0, 0.0)) -> xr.DataArray:
    """Distance in 1/Å of each detector pixel centre from ``center`` = (ky, kx)."""
    return np.hypot(data["ky"] - center[0], data["kx"] - center[1])


def annular_mask(
    data: xr.DataArray, *, inner: float, outer: float, center: tuple[float, float] = (0.0, 0.0)
) -> xr.DataArray:
    """Boolean mask on ``(ky, kx)`` of pixels with ``inner <= |k - center| < outer``."""
    if not 0 <= inner < outer:
        raise ValueError(f"need 0 <= inner < outer (in 1/Å); got inner={inner!r}, outer={outer!r}.")
    radius = k_radius(data, center)
    mask = (radius >= inner) & (radius < outer)
    if not bool(mask.any()):
        raise ValueError(
            f"the detector inner={inner}, outer={outer} 1/Å around {center} covers no pixel; "
            f"the detector spans ky {float(data.ky.min()):.3g}..{float(data.ky.max()):.3g}, "
            f"kx {float(data.kx.min()):.3g}..{float(data.kx.max()):.3g} 1/Å."
        )
    return mask.drop_vars([c for c in mask.coords if c not in K_DIMS])


def apply_detector(data: xr.DataArray, mask: xr.DataArray) -> xr.DataArray:
    """Weighted sum of every pattern under ``mask`` (bool or float weights on ``(ky, kx)``).

    Lazy on dask-backed data: each chunk of whole patterns is reduced on its own.
    """
    weights = mask.astype("float64" if data.dtype == np.float64 else "float32")
    image = xr.dot(data, weights, dim=list(K_DIMS))
    image.name = "virtual_image"
    image.attrs = {"units": data.attrs.get("units", "counts"), "long_name": "virtual detector signal"}
    return image
