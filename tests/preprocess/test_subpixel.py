"""The Poisson-likelihood step of the sub-pixel disk position against the shot-noise bound."""

import numpy as np
import pytest
import torch

from stemkit.physics.render import Detector, finish_patterns, render_disks
from stemkit.preprocess.subpixel import PoissonStep

HALF = 7  # 15 × 15 px windows
RADIUS_PX = 3.0


def disk_windows(n, counts, background, seed):
    """``n`` noisy windows of one blurred disk at random sub-pixel offsets from the centre pixel,
    the noise-free unit-sum disk at the centre (the template) and the true offsets (rows, columns)."""
    rng = np.random.default_rng(seed)
    det = Detector(shape=(2 * HALF + 1,) * 2, k_step=0.01, psf_sigma_px=0.5)  # k = 0 at the centre pixel
    offsets = rng.uniform(-0.5, 0.5, (n, 2))
    radius = RADIUS_PX * det.k_step
    disks = render_disks(offsets[:, 1:] * det.k_step, offsets[:, :1] * det.k_step, np.ones((n, 1)), detector=det, radius=radius)
    blurred = finish_patterns(disks, detector=det)  # blurred, unit sum
    noisy = rng.poisson(counts * blurred + background).astype(np.float32)
    template = finish_patterns(render_disks(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), detector=det, radius=radius),
                               detector=det)[0]
    return noisy.reshape(n, -1), template / template.sum(), offsets


def shot_noise_bound(template, counts, background, offsets):
    """RMS over the windows of the Cramér–Rao bound on the distance error (amplitude and background known)."""
    spectrum = np.fft.fft2(template)
    ky = np.fft.fftfreq(template.shape[0])[:, None]
    kx = np.fft.fftfreq(template.shape[1])[None, :]
    bound = []
    for dy, dx in offsets[:200]:
        shifted = np.fft.ifft2(spectrum * np.exp(-2j * np.pi * (ky * dy + kx * dx)))
        model = counts * np.clip(shifted.real, 0, None) + background
        gy = np.fft.ifft2(2j * np.pi * ky * spectrum * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real * counts
        gx = np.fft.ifft2(2j * np.pi * kx * spectrum * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real * counts
        bound.append(1 / np.sum(gy**2 / model) + 1 / np.sum(gx**2 / model))
    return float(np.sqrt(np.mean(bound)))


def design():
    dy, dx = (a.ravel() for a in np.mgrid[-HALF : HALF + 1, -HALF : HALF + 1])
    return torch.as_tensor(np.stack([np.ones(dy.size), dy, dx], axis=1), dtype=torch.float32)


@pytest.mark.parametrize("counts, background", [(120.0, 0.2), (400.0, 2.0)])
def test_one_step_from_a_rough_start_reaches_the_shot_noise_bound(counts, background):
    """Weak disks whose counts outweigh the background: from starts 0.15 px off, one step lands within
    12 % of the Cramér–Rao bound, without bias (measured 2026-11-22: 0.191 / 0.188 px and 0.122 / 0.122 px)."""
    n = 3000
    windows, template, truth = disk_windows(n, counts, background, seed=1)
    step = PoissonStep(template, RADIUS_PX, HALF, design(), torch.device("cpu"), min_error=0.0)
    rng = np.random.default_rng(2)
    start = truth + rng.normal(0, 0.15, truth.shape)
    plane = torch.tensor([[background, 0.0, 0.0]]).repeat(n, 1)
    found = step(torch.as_tensor(windows), torch.arange(n), plane, torch.as_tensor(start, dtype=torch.float32),
                 torch.full((n,), counts)).numpy()
    error = found - truth
    rms = float(np.sqrt(np.mean(np.sum(error**2, axis=1))))
    bound = shot_noise_bound(template, counts, background, truth)
    assert rms <= 1.12 * bound, (rms, bound)
    assert np.all(np.abs(error.mean(axis=0)) < 3 * rms / np.sqrt(n)), error.mean(axis=0)


def test_no_step_where_the_predicted_error_is_small():
    """Bright disks keep the fit's position (the profile's systematic error would outweigh the gain)."""
    n = 200
    windows, template, truth = disk_windows(n, 1e5, 1.0, seed=3)
    step = PoissonStep(template, RADIUS_PX, HALF, design(), torch.device("cpu"))
    start = torch.as_tensor(truth + 0.01, dtype=torch.float32)
    plane = torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)
    found = step(torch.as_tensor(windows), torch.arange(n), plane, start, torch.full((n,), 1e5))
    assert torch.equal(found, start)
