"""Rendering reflections to detector images: disks, direct beam, blur, background, noise.

Each disk is drawn with an anti-aliased edge (pixel coverage from the distance of the
pixel centre to the disk edge), then its first moments are corrected so that its pixels
sum to the reflection's intensity and their centroid is the reflection's position to
machine precision: the ground truth matches the pixels. Everything is batched over patterns.

Units: reflection positions are in 1/Å in the lab frame of DESIGN.md (``kx`` along
detector columns, ``ky`` along rows, 0 at the direct beam); intensities are fractions
of the incident beam (the caller decides the scale); ``dose`` is electrons per pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from stemkit.data.units import wavelength_angstrom

MAX_WINDOW_ELEMENTS = 2**23


@dataclass(frozen=True)
class Detector:
    """A pixelated detector in reciprocal space.

    Attributes
    ----------
    shape
        Pixels (rows = ky, columns = kx).
    k_step
        Pixel size in 1/Å.
    k_origin
        Pixel (row, column), possibly fractional, hit by the undeflected beam; default
        ``(rows // 2, columns // 2)`` as in :func:`stemkit.datacube`.
    psf_sigma_px
        Gaussian point-spread of the detector, in pixels (0: none).
    saturation
        Counts at which a pixel saturates (``None``: never).
    """

    shape: tuple[int, int] = (128, 128)
    k_step: float = 0.02
    k_origin: tuple[float, float] | None = None
    psf_sigma_px: float = 0.0
    saturation: float | None = None

    @property
    def origin(self) -> tuple[float, float]:
        """The direct-beam pixel (row, column)."""
        return self.k_origin if self.k_origin is not None else (self.shape[0] // 2, self.shape[1] // 2)

    def k_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ky, kx)`` of every pixel centre in 1/Å, each of shape ``shape``."""
        oy, ox = self.origin
        ky = (np.arange(self.shape[0]) - oy) * self.k_step
        kx = (np.arange(self.shape[1]) - ox) * self.k_step
        return np.meshgrid(ky, kx, indexing="ij")

    def k_max(self) -> float:
        """Largest |k| (1/Å) seen anywhere on the detector (to its corners)."""
        ky, kx = self.k_grid()
        return float(np.hypot(ky, kx).max())


def disk_radius(convergence_mrad: float, beam_energy_kev: float) -> float:
    """Radius in 1/Å of a diffraction disk for a convergence semi-angle α: ``α / λ``."""
    return convergence_mrad * 1e-3 / wavelength_angstrom(beam_energy_kev)


def distortion_matrix(ellipticity: float, angle_deg: float) -> np.ndarray:
    """2×2 matrix (acting on (kx, ky)) that stretches by ``1 + ellipticity`` along ``angle_deg`` from +kx."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return rot @ np.diag([1.0 + ellipticity, 1.0]) @ rot.T


def render_disks(
    kx: np.ndarray,
    ky: np.ndarray,
    intensity: np.ndarray,
    *,
    detector: Detector,
    radius: float,
    edge_px: float = 1.0,
    distortion: np.ndarray | None = None,
) -> np.ndarray:
    """Draw disks of ``radius`` (1/Å) at ``(kx, ky)`` with total ``intensity`` each.

    Parameters
    ----------
    kx, ky, intensity
        Arrays of shape ``(n_patterns, n_reflections)``; reflections with intensity
        <= 0 (padding) are skipped.
    detector
        Geometry of the images.
    radius
        Disk radius in 1/Å (see :func:`disk_radius`); ``0`` draws single-pixel-wide
        anti-aliased spots (radius of half a pixel).
    edge_px
        Width of the anti-aliased edge in pixels.
    distortion
        Optional 2×2 matrix applied to every k vector (positions and disk shapes), e.g.
        from :func:`distortion_matrix`.

    Returns
    -------
    numpy.ndarray
        ``(n_patterns, rows, columns)`` float32 images; each disk sums to its intensity
        (less whatever falls off the detector).
    """
    kx, ky, intensity = (np.asarray(a, dtype=float) for a in np.broadcast_arrays(kx, ky, intensity))
    if kx.ndim != 2:
        raise ValueError(f"kx, ky and intensity must have shape (n_patterns, n_reflections); got {kx.shape}")
    n_patterns = kx.shape[0]
    rows, cols = detector.shape
    matrix = np.eye(2) if distortion is None else np.asarray(distortion, dtype=float)
    radius_px = max(radius / detector.k_step, 0.5)
    pattern, col, row, weight = _visible_disks(kx, ky, intensity, detector, matrix, radius_px)
    half = int(np.ceil(radius_px * np.abs(np.linalg.eigvals(matrix)).max() + edge_px + 1))
    offsets = np.arange(-half, half + 1)
    window = offsets.size**2
    images = np.zeros(n_patterns * rows * cols, dtype=np.float64)
    inverse = np.linalg.inv(matrix)
    batch = max(1, MAX_WINDOW_ELEMENTS // window)
    for start in range(0, pattern.size, batch):
        sl = slice(start, start + batch)
        _splat(images, pattern[sl], row[sl], col[sl], weight[sl], offsets, inverse, radius_px, edge_px, (rows, cols))
    return images.reshape(n_patterns, rows, cols).astype(np.float32)


def _visible_disks(kx, ky, intensity, detector, matrix, radius_px):
    """Flattened (pattern, column, row, intensity) of the disks that can touch the detector."""
    oy, ox = detector.origin
    k = np.stack([kx, ky], axis=-1) @ matrix.T
    col = k[..., 0] / detector.k_step + ox
    row = k[..., 1] / detector.k_step + oy
    margin = radius_px * 2 + 2
    rows, cols = detector.shape
    keep = (
        (intensity > 0)
        & (col > -margin) & (col < cols - 1 + margin)
        & (row > -margin) & (row < rows - 1 + margin)
    )
    pattern = np.broadcast_to(np.arange(kx.shape[0])[:, None], kx.shape)
    return pattern[keep], col[keep], row[keep], intensity[keep]


def _splat(images, pattern, row, col, weight, offsets, inverse, radius_px, edge_px, shape):
    """Add anti-aliased, unit-sum disks to the flat image stack with one bincount."""
    rows, cols = shape
    r0 = np.floor(row).astype(int)
    c0 = np.floor(col).astype(int)
    pr = r0[:, None, None] + offsets[None, :, None]
    pc = c0[:, None, None] + offsets[None, None, :]
    dy = pr - row[:, None, None]
    dx = pc - col[:, None, None]
    # distance measured in the undistorted frame: distorted disks become ellipses
    ux = inverse[0, 0] * dx + inverse[0, 1] * dy
    uy = inverse[1, 0] * dx + inverse[1, 1] * dy
    coverage = np.clip((radius_px - np.hypot(ux, uy)) / edge_px + 0.5, 0.0, 1.0)
    coverage = _centre_moments(coverage, dx, dy)
    total = coverage.sum(axis=(1, 2))
    coverage *= (weight / np.where(total > 0, total, 1.0))[:, None, None]
    inside = (pr >= 0) & (pr < rows) & (pc >= 0) & (pc < cols) & (coverage > 0)
    flat = (pattern[:, None, None] * rows + pr) * cols + pc
    images += np.bincount(flat[inside], weights=coverage[inside], minlength=images.size)


def _centre_moments(coverage: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Reweight each disk by ``1 + a·dx + b·dy`` so that its centroid falls exactly on its centre.

    The anti-aliased edge leaves the centroid of a small disk a few hundredths of a pixel
    off; this smallest linear correction (a few percent of the edge weights) removes the
    offset, so the simulator's positions are the pixels' centroids.
    """
    total = coverage.sum(axis=(1, 2))
    mx = (coverage * dx).sum(axis=(1, 2)) / total
    my = (coverage * dy).sum(axis=(1, 2)) / total
    cx, cy = dx - mx[:, None, None], dy - my[:, None, None]
    sxx = (coverage * cx * dx).sum(axis=(1, 2))
    sxy = (coverage * cx * dy).sum(axis=(1, 2))
    syy = (coverage * cy * dy).sum(axis=(1, 2))
    det = sxx * syy - sxy**2
    solvable = det > 1e-12 * total**2  # a single lit pixel has nothing to correct
    det = np.where(solvable, det, 1.0)
    # solve [[sxx, sxy], [sxy, syy]] @ (a, b) = -total * (mx, my)
    a = np.where(solvable, -total * (syy * mx - sxy * my) / det, 0.0)
    b = np.where(solvable, -total * (sxx * my - sxy * mx) / det, 0.0)
    return coverage * (1.0 + a[:, None, None] * cx + b[:, None, None] * cy)


def lorentzian_background(detector: Detector, gamma: float, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Diffuse background ``1 / (1 + (|k - center| / gamma)²)`` normalised to unit sum.

    ``gamma`` (1/Å) is the half width at half maximum; this is the background model of
    Qin, Agar and Tran (2023) for CC-ST-AE, centred on the direct beam.
    """
    ky, kx = detector.k_grid()
    background = 1.0 / (1.0 + (np.hypot(ky - center[0], kx - center[1]) / gamma) ** 2)
    return (background / background.sum()).astype(np.float32)


def amorphous_ring(detector: Detector, k_ring: float, width: float) -> np.ndarray:
    """A Gaussian ring of radius ``k_ring`` and standard deviation ``width`` (1/Å), unit sum."""
    ky, kx = detector.k_grid()
    ring = np.exp(-0.5 * ((np.hypot(ky, kx) - k_ring) / width) ** 2)
    return (ring / ring.sum()).astype(np.float32)


def finish_patterns(
    signal: np.ndarray,
    *,
    detector: Detector,
    background: np.ndarray | None = None,
    background_fraction: float = 0.0,
    dose: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Blur, mix in a background, scale to a dose and add Poisson noise.

    Parameters
    ----------
    signal
        ``(n_patterns, rows, columns)`` noiseless images from :func:`render_disks`.
    background
        A ``(rows, columns)`` background image (unit sum), e.g. :func:`lorentzian_background`.
    background_fraction
        Weight ``w`` of the background: each pattern becomes ``(1 - w) · P / ΣP + w · B``,
        the noise model of Qin, Agar and Tran (2023). With ``w = 0`` the signal keeps its
        own scale relative to ``dose``.
    dose
        Electrons per pattern reaching the detector; the image is scaled so its
        expected sum is ``dose`` and Poisson noise is drawn. ``None``: no noise, and
        the images sum to 1 (or keep their scale when there is no background).
    rng
        Seed or generator for the noise.

    Returns
    -------
    numpy.ndarray
        float32 images, clipped at ``detector.saturation`` if set.
    """
    if not 0.0 <= background_fraction <= 1.0:
        raise ValueError(f"background_fraction must lie in [0, 1]; got {background_fraction!r}")
    if background_fraction > 0 and background is None:
        raise ValueError("background_fraction > 0 needs a background image, e.g. lorentzian_background(detector, 0.5)")
    images = np.asarray(signal, dtype=np.float64)
    if detector.psf_sigma_px > 0:
        images = ndimage.gaussian_filter(images, sigma=(0, detector.psf_sigma_px, detector.psf_sigma_px), mode="constant")
    if background_fraction > 0 or dose is not None:
        totals = images.sum(axis=(1, 2), keepdims=True)
        images = images / np.where(totals > 0, totals, 1.0)
    if background_fraction > 0:
        images = (1.0 - background_fraction) * images + background_fraction * np.asarray(background)[None]
    if dose is not None:
        if not dose > 0:
            raise ValueError(f"dose must be a positive number of electrons per pattern; got {dose!r}")
        generator = np.random.default_rng(rng)
        images = generator.poisson(images * dose).astype(np.float64)
    if detector.saturation is not None:
        images = np.minimum(images, detector.saturation)
    return images.astype(np.float32)
