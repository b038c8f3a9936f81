"""Diffraction patterns made ready for registration: crop, bin, stabilise, remove background.

The CC-ST-AE compares a pattern with a learned base pattern under an affine warp about
the direct beam. :class:`PatternGeometry` fixes, once per dataset, the square window
centred on ``k = 0``, the binning, the filter widths and the annular mask;
:func:`prepare` turns a block of raw patterns into registration images:

1. crop to the largest square centred on the direct-beam pixel, then sum ``bin`` × ``bin``
   pixels (counts are kept, so Poisson statistics stay simple);
2. square root (stabilises Poisson variance; it is scale-equivariant, so any units work);
3. subtract a Gaussian blur of width ``highpass_px`` (removes the smooth diffuse
   background — Lorentzian tails, thermal diffuse — without a model of it);
4. blur by ``smooth_px`` (a matched filter for the small disks, which also makes the
   images smooth enough to interpolate at sub-pixel positions) — left out for the *sharp*
   images (``blur=False``) of the warp refinement, whose template (a mean of many patterns)
   is already smooth: blurring the data as well as the template weights the noise twice
   and cost a third more noise in the strain (see :mod:`stemkit.strain.ccstae`);
5. divide by the dataset's typical RMS inside the mask (one number for all patterns).

The mask is the annulus ``inner_px ≤ |k| ≤ outer_px`` (outside the direct beam and its
filter halo, inside the window with a margin for the warps), narrowed by
:func:`structure_mask` to the pixels near the Bragg disks of a base pattern: pixels of
background alone carry no information on the warp, and leaving them out makes every
step several times cheaper. Binning (which aliases disks of a few pixels and costs
rotation accuracy) is used only for patterns larger than 256 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
import xarray as xr

from stemkit.preprocess.centering import radius_px_of

MAX_SIZE = 256
STRUCTURE_DILATION_PX = 5
STRUCTURE_SIGMA = 3.0
OUTER_FRACTION = 0.85


@dataclass(frozen=True)
class PatternGeometry:
    """Where and how patterns are cut and filtered; derived from the data by :meth:`from_data`."""

    row0: int  # first detector row of the square window
    col0: int
    window: int  # side of the square window on the detector (px)
    bin: int
    k_step: tuple[float, float]  # (ky, kx) 1/Å per binned pixel
    beam_radius_px: float  # binned pixels
    highpass_px: float
    smooth_px: float
    inner_px: float
    outer_px: float
    scale: float = 1.0

    @property
    def size(self) -> int:
        """Side of the prepared (binned) image."""
        return self.window // self.bin

    @property
    def centre(self) -> int:
        """Index of the direct-beam pixel in the prepared image (both axes)."""
        return self.size // 2

    @classmethod
    def from_data(cls, data: xr.DataArray, bin: int | None = None) -> "PatternGeometry":
        """Geometry for ``data``: window centred on k = 0, binned only above 256 px, radii from the beam size."""
        ky, kx = data["ky"].values, data["kx"].values
        if not (np.all(np.diff(ky) > 0) and np.all(np.diff(kx) > 0)):
            raise ValueError("ky and kx must increase along the detector axes (the data contract); "
                             "flip the detector axes of the data first.")
        r0, c0 = int(np.argmin(np.abs(ky))), int(np.argmin(np.abs(kx)))
        half = min(r0, c0, len(ky) - r0, len(kx) - c0)
        if half < 8:
            raise ValueError(f"the direct beam (k = 0) lies within {half} px of the detector edge; centre the data "
                             "with stemkit.preprocess.center first.")
        window = 2 * half
        bin = int(bin) if bin is not None else max(1, int(np.ceil(window / MAX_SIZE)))
        window -= window % (2 * bin)
        half = window // 2
        step = (float(np.mean(np.diff(ky))) * bin, float(np.mean(np.diff(kx))) * bin)
        beam = radius_px_of(np.asarray(data.stem.mean_pattern().values, dtype=float)) / bin
        size = window // bin
        return cls(row0=r0 - half, col0=c0 - half, window=window, bin=bin, k_step=step,
                   beam_radius_px=float(beam), highpass_px=max(2.0, 3.0 * beam), smooth_px=max(0.75, 0.6 * beam),
                   inner_px=max(3.0, 4.0 * beam), outer_px=OUTER_FRACTION * (size // 2))

    def mask(self) -> np.ndarray:
        """The annular mask ``(size, size)`` of the prepared images."""
        y, x = np.mgrid[: self.size, : self.size] - self.centre
        radius = np.hypot(y, x)
        return (radius >= self.inner_px) & (radius <= self.outer_px)

    def with_scale(self, scale: float) -> "PatternGeometry":
        """The same geometry with the intensity scale of step 5."""
        return PatternGeometry(**{**self.__dict__, "scale": float(scale)})


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(n, h, w)`` images (zero padding), ``sigma`` in pixels."""
    if sigma <= 0:
        return images
    radius = int(np.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = nnf.conv2d(images[:, None], kernel.view(1, 1, 1, -1), padding=(0, radius))
    out = nnf.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return out[:, 0]


def smooth_background(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A wide Gaussian blur computed cheaply: average-pool by ~σ/2, blur, upsample bilinearly."""
    factor = max(1, int(sigma // 2))
    if factor == 1:
        return gaussian_blur(images, sigma)
    h, w = images.shape[-2:]
    small = nnf.avg_pool2d(images[:, None], factor, ceil_mode=True)[:, 0]
    small = gaussian_blur(small, sigma / factor)
    return nnf.interpolate(small[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def prepare(block: np.ndarray, geometry: PatternGeometry, device: str | torch.device = "cpu", *,
            blur: bool = True) -> torch.Tensor:
    """Registration images ``(n, size, size)`` float32 of raw patterns ``(..., ky, kx)`` (module steps 1-5;
    without step 4 when ``blur`` is false: :func:`matched_blur` of those is the blurred image)."""
    g = geometry
    patterns = np.asarray(block, dtype=np.float32).reshape(-1, *block.shape[-2:])
    cut = patterns[:, g.row0:g.row0 + g.window, g.col0:g.col0 + g.window]
    images = torch.as_tensor(np.ascontiguousarray(cut), device=device)
    if g.bin > 1:
        images = nnf.avg_pool2d(images[:, None], g.bin)[:, 0] * g.bin**2
    images = torch.sqrt(torch.clamp(images, min=0.0))
    images = images - smooth_background(images, g.highpass_px)
    if blur:
        images = gaussian_blur(images, g.smooth_px)
    return images / g.scale


def matched_blur(sharp: torch.Tensor, geometry: PatternGeometry) -> torch.Tensor:
    """Step 4 of :func:`prepare` applied to sharp images (``prepare(..., blur=False)``)."""
    return gaussian_blur(sharp, geometry.smooth_px)


def dataset_scale(images: torch.Tensor, mask: np.ndarray) -> float:
    """The median RMS over the mask of prepared images (the scale of step 5)."""
    keep = torch.as_tensor(mask, device=images.device)
    rms = images[:, keep].pow(2).mean(dim=1).sqrt()
    value = float(rms.median())
    if not value > 0:
        raise ValueError("the patterns are empty inside the annulus of Bragg disks; check the data and its k axes.")
    return value


def structure_mask(base: np.ndarray, annulus: np.ndarray, dilation_px: float = STRUCTURE_DILATION_PX) -> np.ndarray:
    """The annulus narrowed to within ``dilation_px`` of the disks of a (low-noise) base pattern.

    A disk pixel is one where the base exceeds ``STRUCTURE_SIGMA`` robust standard deviations
    of the base over the annulus (and 2 % of its maximum there); the margin lets disks move
    between patterns (a few percent of strain and degrees of rotation) and stay inside.
    """
    from scipy import ndimage

    values = np.asarray(base, dtype=float)
    inside = values[annulus]
    spread = 1.4826 * np.median(np.abs(inside - np.median(inside)))
    level = max(STRUCTURE_SIGMA * spread, 0.02 * float(inside.max()))
    disks = (values > level) & annulus
    if disks.sum() < 10:
        return annulus
    y, x = np.mgrid[-int(dilation_px):int(dilation_px) + 1, -int(dilation_px):int(dilation_px) + 1]
    near = ndimage.binary_dilation(disks, structure=np.hypot(y, x) <= dilation_px)
    return near & annulus
