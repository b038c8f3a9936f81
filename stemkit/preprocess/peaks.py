"""Bragg-peak finding: a matched filter with the probe, significance against Poisson noise,
non-maximum suppression, and sub-pixel centre-of-mass refinement, batched in torch.

For every pattern:

1. correlate with the probe template (unit sum; the direct beam of the mean pattern,
   or a vacuum pattern) minus the mean over an annulus around each pixel (the local
   background), in one FFT filter, giving the excess ``C - b``;
2. turn it into a significance: with ``noise="poisson"`` (data in counts) the Li & Ma
   (1983) on/off statistic of the counts under the template against the counts in the
   annulus — Gaussian ``(C - b)/σ`` for many counts, right in the Poisson tail for few,
   and aware that the annulus itself is a noisy estimate of the background;
   with ``noise="uniform"``, σ is the robust spread (MAD) of ``C - b`` over the pattern;
3. keep local maxima (within ``min_spacing``) above ``threshold`` σ, away from the
   detector edge, strongest first, at most ``max_peaks``;
4. refine each to sub-pixel precision: subtract a background plane fitted in an annulus
   around the peak, then iterate a Gaussian-windowed centre of mass to its fixed point
   (``subpixel="com"``; unbiased for a symmetric disk on a sloping background), and
   measure the integrated intensity over the plane within the probe radius + 1 px.

Positions are returned relative to the direct beam of each pattern (measured with
:func:`beam_position` unless given), so ``kx = ky = 0`` is the beam in every pattern
without resampling anything. The direct beam itself is one of the peaks.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import xarray as xr

from stemkit.data.contract import SCAN_DIMS
from stemkit.preprocess.centering import positions_dataset, probe_template, radius_px_of, reference_image, beam_kernel
from stemkit.preprocess.kernels import map_patterns

FIELDS = ("ky", "kx", "intensity", "significance")
BATCH_ELEMENTS = 2**23
REFINE_ITERATIONS = 4


def find_peaks(
    data: xr.DataArray,
    *,
    probe: np.ndarray | xr.DataArray | None = None,
    threshold: float = 5.0,
    min_spacing: float | None = None,
    max_peaks: int = 64,
    subpixel: Literal["com", "none"] = "com",
    noise: Literal["poisson", "uniform"] = "poisson",
    positions: xr.Dataset | None = None,
    radius: float | None = None,
    device: str | torch.device = "cpu",
) -> xr.Dataset:
    """Find the Bragg disks of every pattern.

    Parameters
    ----------
    data
        Canonical 4D DataArray, numpy or dask (computed lazily, chunk by chunk). With
        ``noise="poisson"`` the intensities must be counts (multiply by the gain first).
    probe
        A ``(ky, kx)`` vacuum pattern of the probe; default: the direct beam of the mean pattern.
    threshold
        Detection threshold in standard deviations of the noise (see the module docstring).
    min_spacing
        Smallest distance between two peaks in 1/Å; default: the probe diameter.
    max_peaks
        Length of the padded ``peak`` dimension; the strongest peaks are kept.
    subpixel
        ``"com"`` (background-subtracted centre of mass) or ``"none"`` (pixel positions).
    noise
        ``"poisson"`` for counts, ``"uniform"`` for data of unknown scale (see above).
    positions
        Direct-beam positions (``beam_ky``, ``beam_kx``), e.g. from :func:`fit_descan`;
        default: measured with :func:`beam_position`.
    radius
        Probe radius in 1/Å; default: measured from the mean pattern.
    device
        Torch device for the computation (``"cuda"`` for a GPU).

    Returns
    -------
    xarray.Dataset
        ``kx``, ``ky`` (1/Å, relative to each pattern's direct beam), ``intensity``
        (integrated, background-subtracted), ``significance`` (σ), ``valid`` on
        ``(scan_y, scan_x, peak)``, padded with NaN / False; ``n_peaks``, ``beam_ky``
        and ``beam_kx`` on ``(scan_y, scan_x)``.
    """
    if subpixel not in ("com", "none"):
        raise ValueError(f"subpixel must be 'com' or 'none'; got {subpixel!r}")
    if noise not in ("poisson", "uniform"):
        raise ValueError(f"noise must be 'poisson' or 'uniform'; got {noise!r}")
    if not (isinstance(max_peaks, int) and max_peaks > 0):
        raise ValueError(f"max_peaks must be a positive integer; got {max_peaks!r}")
    step = float(data.stem.k_step[1])
    reference = reference_image(data, probe)
    radius = radius if radius is not None else radius_px_of(reference) * step
    radius_px = radius / step
    spacing_px = (min_spacing / step) if min_spacing is not None else 2 * radius_px
    template = probe_template(reference, radius_px)
    template = np.clip(template, 0, None)
    if template.sum() <= 0:
        raise ValueError("the probe template is empty: give a vacuum pattern as probe=, or check the data")
    beam = None if positions is not None else beam_kernel(reference, radius_px)
    finder = _PeakFinder(template / template.sum(), radius_px, spacing_px, threshold, max_peaks, subpixel, noise, device, beam)
    raw = np.asarray(map_patterns(data, finder, out_shape=(max_peaks + 1, len(FIELDS)), dtype=np.float32))
    if positions is None:
        positions = positions_dataset(data, raw[:, :, max_peaks, :2].astype(np.float64), method="com", radius_px=radius_px)
    attrs = locals_for_attrs(threshold, spacing_px * step, max_peaks, subpixel, noise, radius)
    return _peaks_dataset(data, raw[:, :, :max_peaks], positions.compute(), attrs)


def locals_for_attrs(threshold, min_spacing, max_peaks, subpixel, noise, radius) -> dict:
    """The parameters recorded in the result's attrs."""
    return {
        "method": "stemkit.find_peaks",
        "threshold_sigma": float(threshold),
        "min_spacing": float(min_spacing),
        "max_peaks": int(max_peaks),
        "subpixel": subpixel,
        "noise": noise,
        "probe_radius": float(radius),
    }


def _peaks_dataset(data: xr.DataArray, raw: np.ndarray, positions: xr.Dataset, attrs: dict) -> xr.Dataset:
    oy, ox = (float(data[d].values[0]) for d in ("ky", "kx"))
    sy, sx = data.stem.k_step
    beam_ky = positions["beam_ky"].values[..., None]
    beam_kx = positions["beam_kx"].values[..., None]
    ky = oy + raw[..., 0] * sy - beam_ky
    kx = ox + raw[..., 1] * sx - beam_kx
    valid = np.isfinite(raw[..., 0])
    dims = (*SCAN_DIMS, "peak")
    k_attrs = {"units": "1/Å", "long_name": "position relative to the direct beam"}
    return xr.Dataset(
        {
            "kx": (dims, kx.astype(np.float32), k_attrs),
            "ky": (dims, ky.astype(np.float32), k_attrs),
            "intensity": (dims, raw[..., 2].astype(np.float32), {"units": data.attrs.get("units", "counts")}),
            "significance": (dims, raw[..., 3].astype(np.float32), {"units": "sigma"}),
            "valid": (dims, valid),
            "n_peaks": (SCAN_DIMS, valid.sum(axis=-1).astype(np.int32)),
            "beam_ky": (SCAN_DIMS, positions["beam_ky"].values, {"units": "1/Å"}),
            "beam_kx": (SCAN_DIMS, positions["beam_kx"].values, {"units": "1/Å"}),
        },
        coords={d: data[d] for d in SCAN_DIMS},
        attrs=attrs | {"beam_energy_kev": data.stem.beam_energy_kev},
    )


def _local_maxima_above(z: torch.Tensor, threshold: float, edge: int):
    """Indices ``(b, r, c)`` of pixels above ``threshold``, ``edge`` px inside the border, >= their 8 neighbours.

    Only the (few) pixels above threshold are compared with their neighbours.
    """
    above = z > threshold
    above[:, :edge] = False
    above[:, -edge:] = False
    above[:, :, :edge] = False
    above[:, :, -edge:] = False
    b, r, c = above.nonzero(as_tuple=True)
    centre = z[b, r, c]
    is_max = torch.ones_like(centre, dtype=torch.bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                is_max &= centre >= z[b, r + dr, c + dc]
    return b[is_max], r[is_max], c[is_max]


def _strongest_per_pattern(b, r, c, score, n: int, k: int):
    """Pad the candidates of each pattern into ``(n, k)`` arrays, strongest first."""
    order = torch.sort(score, descending=True, stable=True).indices
    order = order[torch.sort(b[order], stable=True).indices]
    b, r, c, score = b[order], r[order], c[order], score[order]
    counts = torch.bincount(b, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(b.numel(), device=b.device) - first[b]
    keep = rank < k
    rows = torch.zeros((n, k), dtype=torch.long, device=b.device)
    cols = torch.zeros((n, k), dtype=torch.long, device=b.device)
    scores = torch.full((n, k), -torch.inf, device=score.device, dtype=score.dtype)
    rows[b[keep], rank[keep]] = r[keep]
    cols[b[keep], rank[keep]] = c[keep]
    scores[b[keep], rank[keep]] = score[keep]
    return rows, cols, scores


def _on_off_significance(on: torch.Tensor, off: torch.Tensor, alpha: float) -> torch.Tensor:
    """Li & Ma (1983, ApJ 272, 317, eq. 17) significance of ``on`` counts over a background measured as ``off``.

    ``on`` counts fall under the template, ``off`` in the annulus, whose area is ``1/alpha``
    times the template's. Unlike a known background, this accounts for the noise of the
    background estimate itself, which matters where the annulus holds only a few counts
    (a Gaussian or known-background statistic then calls stray counts 5σ peaks).
    """
    on = on.clamp_min(0)
    off = off.clamp_min(0)
    total = (on + off).clamp_min(1e-12)
    term_on = on * torch.log(((1 + alpha) / alpha) * on / total).nan_to_num(0.0)
    term_off = off * torch.log((1 + alpha) * off / total).nan_to_num(0.0)
    significance = torch.sqrt((2 * (term_on + term_off)).clamp_min(0))
    return torch.where(on > alpha * off, significance, -significance)


class _PeakFinder:
    """The per-block kernel: ``(n_y, n_x, ky, kx)`` counts -> ``(n_y, n_x, max_peaks + 1, 4)``.

    Rows ``:max_peaks`` hold (row, column, intensity, significance) of the peaks; the last
    row holds the direct beam's (row, column) when a ``beam`` kernel is given, so that the
    data are read once for both.
    """

    def __init__(self, template, radius_px, spacing_px, threshold, max_peaks, subpixel, noise, device, beam=None):
        self.shape = template.shape
        self.beam = beam
        self.device = torch.device(device)
        self.radius_px = float(radius_px)
        self.spacing = max(1, int(round(spacing_px)))
        self.threshold = float(threshold)
        self.max_peaks = int(max_peaks)
        self.subpixel = subpixel
        self.noise = noise
        self.edge = int(np.ceil(self.radius_px))
        annulus = self._annulus(self.radius_px + 2.0, self.radius_px + 4.0)
        self.annulus_pixels = float(annulus.sum())
        # the template-weighted sum minus the annulus mean around it, and that mean alone
        self.excess_ft = self._kernel_ft(template - annulus / annulus.sum())
        self.annulus_ft = self._kernel_ft(annulus / annulus.sum())
        self.template_sq = float((template**2).sum())
        self.window = self._window_offsets(self.radius_px + 2.0)
        self.annulus_offsets = self._ring_offsets(self.radius_px + 2.0, self.radius_px + 4.0)
        design = torch.stack(
            [torch.ones(len(self.annulus_offsets)), self.annulus_offsets[:, 0].float(), self.annulus_offsets[:, 1].float()], 1
        )
        self.plane_pinv = torch.linalg.pinv(design).to(self.device)  # (3, n_annulus)

    def _annulus(self, inner: float, outer: float) -> np.ndarray:
        rows, cols = np.indices(self.shape)
        r = np.hypot(rows - self.shape[0] // 2, cols - self.shape[1] // 2)
        return ((r >= inner) & (r < outer)).astype(np.float64)

    def _kernel_ft(self, kernel: np.ndarray) -> torch.Tensor:
        centred = np.fft.ifftshift(kernel)  # kernel centre to index (0, 0)
        return torch.fft.rfft2(torch.as_tensor(centred, dtype=torch.float32, device=self.device)).conj()

    def _window_offsets(self, radius: float) -> torch.Tensor:
        half = int(np.ceil(radius))
        dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
        inside = np.hypot(dy, dx) <= radius
        return torch.as_tensor(np.stack([dy[inside], dx[inside]], axis=1), device=self.device)

    def _ring_offsets(self, inner: float, outer: float) -> torch.Tensor:
        half = int(np.ceil(outer))
        dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
        r = np.hypot(dy, dx)
        ring = (r >= inner) & (r < outer)
        return torch.as_tensor(np.stack([dy[ring], dx[ring]], axis=1), device=self.device)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        lead = block.shape[:2]
        patterns = np.asarray(block, dtype=np.float32).reshape(-1, *self.shape)
        out = np.full((patterns.shape[0], self.max_peaks + 1, len(FIELDS)), np.nan, dtype=np.float32)
        batch = max(1, BATCH_ELEMENTS // (self.shape[0] * self.shape[1]))
        for start in range(0, patterns.shape[0], batch):
            out[start : start + batch] = self._batch(patterns[start : start + batch])
        return out.reshape(*lead, self.max_peaks + 1, len(FIELDS))

    @torch.no_grad()
    def _batch(self, patterns: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(patterns, device=self.device)
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        spectrum = torch.fft.rfft2(x)
        excess = torch.fft.irfft2(spectrum * self.excess_ft, s=self.shape)
        rows, cols, score = self._maxima(*self._significance(excess, spectrum))
        result = torch.full((x.shape[0], self.max_peaks + 1, len(FIELDS)), float("nan"))
        found = torch.isfinite(score)
        b, slot = found.nonzero(as_tuple=True)
        if b.numel():
            refined_rows, refined_cols, intensity = self._refine(x, b, rows[b, slot], cols[b, slot])
            result[b, slot, 0] = refined_rows
            result[b, slot, 1] = refined_cols
            result[b, slot, 2] = intensity
            result[..., : self.max_peaks, 3] = score
        if self.beam is not None:
            result[:, self.max_peaks, :2] = torch.as_tensor(self.beam(patterns), dtype=result.dtype)
        return result.cpu().numpy()

    def _significance(self, excess: torch.Tensor, spectrum: torch.Tensor):
        """A significance map to screen candidates with, and the exact significance of a candidate.

        For Poisson noise the screen is the Gaussian ``(n − λ)/√λ`` with λ never below one
        count per annulus, which overstates the significance of upward deviations, so no
        true candidate is screened out; the Li & Ma on/off statistic is then computed at the
        few surviving local maxima only.
        """
        if self.noise == "poisson":
            n_eff = 1.0 / self.template_sq
            level = torch.fft.irfft2(spectrum * self.annulus_ft, s=self.shape)
            expected = level.clamp_min(1.0 / self.annulus_pixels) * n_eff
            surplus = excess * n_eff
            screen = surplus * torch.rsqrt(expected)
            alpha = n_eff / self.annulus_pixels

            def exact(b, r, c):
                off = level[b, r, c] * self.annulus_pixels  # counts in the annulus
                return _on_off_significance(off * alpha + surplus[b, r, c], off, alpha)

            return screen, exact
        flat = excess.reshape(excess.shape[0], -1)
        median = flat.median(dim=1, keepdim=True).values
        mad = (flat - median).abs().median(dim=1, keepdim=True).values * 1.4826
        scale = torch.maximum(mad, 1e-6 * flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-30))
        return excess / scale.reshape(-1, 1, 1), None

    def _maxima(self, z: torch.Tensor, rescore=None):
        """The strongest local maxima above threshold, none within ``spacing`` of a stronger one.

        ``rescore(b, r, c)``, when given, replaces the screening value ``z`` at the local
        maxima by the exact significance before the threshold is applied again.
        """
        b, r, c = _local_maxima_above(z, self.threshold, max(1, self.edge))
        exact = z[b, r, c] if rescore is None else rescore(b, r, c)
        above = exact > self.threshold
        b, r, c, exact = b[above], r[above], c[above], exact[above]
        most = int(torch.bincount(b, minlength=z.shape[0]).max()) if b.numel() else 0
        k = max(1, min(2 * self.max_peaks, most))
        rows, cols, score = _strongest_per_pattern(b, r, c, exact, z.shape[0], k)
        rf, cf = rows.float(), cols.float()
        dr = rf[:, :, None] - rf[:, None, :]
        dc = cf[:, :, None] - cf[:, None, :]
        distance2 = dr * dr + dc * dc
        stronger = torch.ones(k, k, dtype=torch.bool, device=z.device).tril(-1)  # j < i is stronger than i
        close = (distance2 < self.spacing**2) & stronger[None] & torch.isfinite(score)[:, None, :]
        score = torch.where(close.any(-1) | ~torch.isfinite(score), torch.tensor(-torch.inf, device=z.device), score)
        score, order = score.sort(dim=1, descending=True)
        rows, cols = rows.gather(1, order), cols.gather(1, order)
        rows, cols, score = rows[:, : self.max_peaks], cols[:, : self.max_peaks], score[:, : self.max_peaks]
        score = torch.where(torch.isfinite(score), score, torch.nan)
        if score.shape[1] < self.max_peaks:
            pad = self.max_peaks - score.shape[1]
            rows, cols = (torch.nn.functional.pad(t, (0, pad)) for t in (rows, cols))
            score = torch.nn.functional.pad(score, (0, pad), value=float("nan"))
        return rows, cols, score

    def _refine(self, x, b, rows, cols):
        """Sub-pixel position and integrated intensity of each found peak (flat lists ``b, rows, cols``).

        A background plane is fitted to the annulus around the peak (a fixed design
        matrix, so one precomputed pseudo-inverse); the position is the fixed point of a
        Gaussian-windowed centroid of the excess over that plane, which for a symmetric
        disk is unbiased; the intensity is the excess summed over the probe disk + 1 px.
        """
        b, r0, c0 = b[:, None], rows[:, None], cols[:, None]
        plane = self._gather(x, b, r0, c0, self.annulus_offsets) @ self.plane_pinv.T  # (m, 3)
        dy = self.window[:, 0].float()
        dx = self.window[:, 1].float()
        pr = r0 + self.window[None, :, 0]
        pc = c0 + self.window[None, :, 1]
        excess = self._gather(x, b, r0, c0, self.window) - (plane[:, :1] + plane[:, 1:2] * dy + plane[:, 2:3] * dx)
        inside = (pr >= 0) & (pr < self.shape[0]) & (pc >= 0) & (pc < self.shape[1])
        excess = torch.where(inside, excess, 0.0)
        in_disk = (dy**2 + dx**2) <= (self.radius_px + 1.0) ** 2
        intensity = (excess * in_disk).sum(-1)
        offset_r = torch.zeros_like(intensity)
        offset_c = torch.zeros_like(intensity)
        if self.subpixel == "com":
            sigma2 = (1.2 * self.radius_px + 0.5) ** 2
            for _ in range(REFINE_ITERATIONS):
                weight = torch.exp(-((dy - offset_r[:, None]) ** 2 + (dx - offset_c[:, None]) ** 2) / (2 * sigma2))
                w_excess = weight * excess
                total = w_excess.sum(-1)
                ok = total > 0
                safe = torch.where(ok, total, torch.ones_like(total))
                limit = self.radius_px
                offset_r = torch.where(ok, ((w_excess * dy).sum(-1) / safe).clamp(-limit, limit), offset_r)
                offset_c = torch.where(ok, ((w_excess * dx).sum(-1) / safe).clamp(-limit, limit), offset_c)
        return rows.float() + offset_r, cols.float() + offset_c, intensity

    def _gather(self, x, b, r0, c0, offsets):
        pr = (r0 + offsets[None, :, 0]).clamp(0, self.shape[0] - 1)
        pc = (c0 + offsets[None, :, 1]).clamp(0, self.shape[1] - 1)
        return x[b, pr, pc]
