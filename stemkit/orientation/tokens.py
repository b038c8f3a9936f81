"""Bragg disks as tokens: the model's input, built the same way from found and from simulated peaks.

Each diffracted disk (the direct beam removed) becomes one token of five features:

- ``|k| / K_SCALE``: its distance from the direct beam in 1/Å, scaled to order 1;
- ``cos φ``, ``sin φ``: its azimuth (x towards y, DESIGN.md), continuous where an angle jumps;
- ``log(I / I_max)``: its intensity relative to the pattern's strongest disk, on a log
  scale (intensities span decades, and kinematic theory gets them only roughly right);
- ``λ / LAMBDA_SCALE``: the beam's wavelength, so the model can know the Ewald-sphere
  curvature that decides which reflections appear at a given orientation.

The k-scale and the beam energy come from the data (the peak Dataset's 1/Å coordinates
and ``attrs["beam_energy_kev"]``), never assumed. Tokens are the strongest ``max_tokens``
disks, padded, with a boolean mask.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from stemkit.data.units import wavelength_angstrom

K_SCALE = 1.0
LAMBDA_SCALE = 0.025
FEATURES = ("k", "cos_phi", "sin_phi", "log_intensity", "wavelength")
LOG_FLOOR = -12.0
BEAM_EXCLUSION = 1.5  # peaks within this many probe radii of k = 0 are the direct beam


def tokens_from_arrays(
    kx: np.ndarray,
    ky: np.ndarray,
    intensity: np.ndarray,
    valid: np.ndarray,
    *,
    beam_energy_kev: float | np.ndarray,
    beam_radius: float | np.ndarray,
    max_tokens: int = 48,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens from padded peak arrays ``(n, P)`` positioned relative to the direct beam (1/Å).

    Parameters
    ----------
    kx, ky, intensity, valid
        Peak positions (1/Å from the direct beam), intensities and validity, ``(n, P)``.
    beam_energy_kev
        One energy, or one per pattern ``(n,)``.
    beam_radius
        Probe (disk) radius in 1/Å, one or one per pattern ``(n,)``: peaks within 1.5 × this
        radius of k = 0 are the direct beam and are dropped.
    max_tokens
        Length of the token axis; the strongest disks are kept.

    Returns
    -------
    features, mask
        ``(n, max_tokens, 5)`` float32 (order of :data:`FEATURES`) and ``(n, max_tokens)`` bool.
    """
    kx, ky, intensity = (np.asarray(a, dtype=np.float64) for a in (kx, ky, intensity))
    k = np.hypot(kx, ky)
    radius = np.broadcast_to(np.asarray(beam_radius, float), (k.shape[0],))[:, None]
    keep = np.asarray(valid, bool) & np.isfinite(k) & (k > BEAM_EXCLUSION * radius) & (intensity > 0)
    score = np.where(keep, intensity, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, :max_tokens]
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    k, kx, ky, intensity, keep = take(k), take(kx), take(ky), take(intensity), take(keep)
    strongest = np.where(keep, intensity, 0).max(axis=1, keepdims=True)
    safe_k = np.where(keep, k, 1.0)
    wavelength = np.broadcast_to(np.vectorize(wavelength_angstrom)(np.asarray(beam_energy_kev, float)), (k.shape[0],))
    features = np.stack(
        [
            k / K_SCALE,
            kx / safe_k,
            ky / safe_k,
            np.clip(np.log(np.where(keep, intensity, 1.0) / np.where(strongest > 0, strongest, 1.0)), LOG_FLOOR, 0.0),
            np.broadcast_to(wavelength[:, None] / LAMBDA_SCALE, k.shape),
        ],
        axis=-1,
    )
    features = np.where(keep[..., None], features, 0.0).astype(np.float32)
    if features.shape[1] < max_tokens:
        pad = max_tokens - features.shape[1]
        features = np.pad(features, ((0, 0), (0, pad), (0, 0)))
        keep = np.pad(keep, ((0, 0), (0, pad)))
    return features, keep


def tokens_from_peaks(peaks: xr.Dataset, *, max_tokens: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of every pattern of a :func:`stemkit.find_peaks` result, flattened over the scan.

    Returns
    -------
    features, mask
        ``(n_y · n_x, max_tokens, 5)`` and ``(n_y · n_x, max_tokens)``, scan rows in order.
    """
    missing = [v for v in ("kx", "ky", "intensity", "valid") if v not in peaks]
    if missing or "beam_energy_kev" not in peaks.attrs or "probe_radius" not in peaks.attrs:
        raise ValueError(
            f"tokens need a peak Dataset from stemkit.find_peaks (variables kx, ky, intensity, valid and attrs "
            f"beam_energy_kev, probe_radius); missing {missing or 'attrs'}"
        )
    flat = {v: peaks[v].values.reshape(-1, peaks.sizes["peak"]) for v in ("kx", "ky", "intensity", "valid")}
    return tokens_from_arrays(
        flat["kx"], flat["ky"], flat["intensity"], flat["valid"],
        beam_energy_kev=float(peaks.attrs["beam_energy_kev"]), beam_radius=float(peaks.attrs["probe_radius"]),
        max_tokens=max_tokens,
    )
