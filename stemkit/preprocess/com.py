"""Centre of mass of every pattern (differential phase contrast), with the descan removed and
the rotation between the scan and the detector found.

The deflection of the beam measures the projected electric field, the gradient of a
potential, so in the scan frame it has no curl. The rotation θ (and a possible flip of
the detector axes) that takes detector directions to scan directions is therefore the
one that minimises the curl of the rotated field; the curl is linear in (cos θ, sin θ),
so the minimum is the smallest eigenvector of a 2×2 matrix, found in closed form. θ is
determined modulo 180°: the field and its negative are equally curl-free.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from stemkit.data.contract import K_DIMS, SCAN_DIMS
from stemkit.preprocess.centering import fit_descan
from stemkit.preprocess.detectors import Detector
from stemkit.preprocess.kernels import map_patterns


def center_of_mass(
    data: xr.DataArray,
    *,
    detector: Detector | None = None,
    descan_order: int | None = 1,
) -> xr.Dataset:
    """Centre of mass of every pattern and the field it measures in the scan frame.

    Parameters
    ----------
    data
        Canonical 4D DataArray (numpy or dask; computed chunk by chunk).
    detector
        Restrict the centre of mass to a virtual detector (e.g. ``Circle(radius)`` around
        the bright field); default: the whole detector.
    descan_order
        Order of the robust polynomial descan removed from the centres of mass; ``None``
        keeps them raw.

    Returns
    -------
    xarray.Dataset
        ``com_ky``, ``com_kx``: centre of mass in detector axes (1/Å), descan removed;
        ``com_y``, ``com_x``: the same deflection rotated into the scan frame; ``curl``
        of the scan-frame field. ``attrs``: ``rotation_deg`` (detector → scan, modulo
        180°), ``flipped`` (detector axes transposed), and the curl residual of the best
        and the worst rotation.
    """
    weights = np.ones((data.sizes["ky"], data.sizes["kx"])) if detector is None else np.asarray(detector.mask(data).values, float)
    ky = data.ky.values[:, None] * weights
    kx = data.kx.values[None, :] * weights

    def kernel(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float64)
        total = np.einsum("yxij,ij->yx", block, weights)
        safe = np.where(total > 0, total, np.nan)
        return np.stack([np.einsum("yxij,ij->yx", block, ky) / safe, np.einsum("yxij,ij->yx", block, kx) / safe], axis=-1)

    com = np.asarray(map_patterns(data, kernel, out_shape=(2,), dtype=np.float64))
    result = xr.Dataset(
        {"com_ky": (SCAN_DIMS, com[..., 0], {"units": "1/Å"}), "com_kx": (SCAN_DIMS, com[..., 1], {"units": "1/Å"})},
        coords={d: data[d] for d in SCAN_DIMS},
    )
    if descan_order is not None:
        descan = fit_descan(result, order=descan_order, variables=("com_ky", "com_kx"))
        result["com_ky"] = result.com_ky - descan.com_ky
        result["com_kx"] = result.com_kx - descan.com_kx
    return _to_scan_frame(result, descan_order)


def _to_scan_frame(result: xr.Dataset, descan_order: int | None) -> xr.Dataset:
    steps = tuple(float(np.diff(result[d].values[:2])[0]) if result.sizes[d] > 1 else 1.0 for d in SCAN_DIMS)
    u, v = np.nan_to_num(result.com_kx.values), np.nan_to_num(result.com_ky.values)
    candidates = []
    for flipped in (False, True):
        a, b = (v, u) if flipped else (u, v)
        theta, residual, worst = _curl_free_rotation(a, b, steps)
        candidates.append((residual, flipped, theta, worst))
    residual, flipped, theta, worst = min(candidates)
    a, b = (v, u) if flipped else (u, v)
    x, y = a * np.cos(theta) - b * np.sin(theta), a * np.sin(theta) + b * np.cos(theta)
    result["com_x"] = (SCAN_DIMS, x, {"units": "1/Å", "long_name": "deflection along scan x"})
    result["com_y"] = (SCAN_DIMS, y, {"units": "1/Å", "long_name": "deflection along scan y"})
    result["curl"] = (SCAN_DIMS, _curl(x, y, steps), {"units": "1/(Å nm)"})
    result.attrs = {
        "method": "center_of_mass",
        "descan_order": -1 if descan_order is None else descan_order,
        "rotation_deg": float(np.rad2deg(theta) % 180.0),
        "rotation_ambiguity_deg": 180.0,
        "flipped": bool(flipped),
        "curl_residual_best": float(residual),
        "curl_residual_worst": float(worst),
    }
    return result


def _curl(x: np.ndarray, y: np.ndarray, steps: tuple[float, float]) -> np.ndarray:
    """∂y/∂x − ∂x/∂y of a field on the scan grid."""
    if min(x.shape) < 2:
        return np.zeros_like(x)
    return np.gradient(y, steps[1], axis=1) - np.gradient(x, steps[0], axis=0)


def _curl_free_rotation(a: np.ndarray, b: np.ndarray, steps: tuple[float, float]) -> tuple[float, float, float]:
    """Angle θ minimising Σ curl(R(θ)(a, b))², the minimum and the maximum of that sum."""
    c1 = _curl(a, b, steps)  # curl at θ = 0
    c2 = _curl(-b, a, steps)  # curl at θ = 90°
    matrix = np.array([[np.sum(c1 * c1), np.sum(c1 * c2)], [np.sum(c1 * c2), np.sum(c2 * c2)]])
    values, vectors = np.linalg.eigh(matrix)
    cos, sin = vectors[:, 0]
    return float(np.arctan2(sin, cos)), float(values[0]), float(values[1])
