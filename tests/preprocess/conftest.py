"""Rendered patterns with a known descan: a direct beam and a square lattice of Bragg disks."""

from __future__ import annotations

import numpy as np
import pytest

import stemkit
from stemkit.physics.render import Detector, finish_patterns, render_disks

DETECTOR = Detector(shape=(64, 64), k_step=0.02)
BEAM_RADIUS = 0.07  # 1/Å, 3.5 px
SCAN = (9, 11)


def descan_truth(scan=SCAN):
    """A plane descan of a few pixels over the scan, in 1/Å."""
    iy, ix = np.mgrid[: scan[0], : scan[1]]
    ky = 0.02 * (0.8 + 0.25 * iy - 0.1 * ix)
    kx = 0.02 * (-1.3 + 0.05 * iy + 0.2 * ix)
    return ky, kx


def lattice_patterns(scan=SCAN, *, dose=None, seed=0, beam_intensity=1.0, spot_intensity=0.05):
    ky0, kx0 = descan_truth(scan)
    g = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=float) * 0.25
    kx = kx0.reshape(-1, 1) + g[None, :, 1]
    ky = ky0.reshape(-1, 1) + g[None, :, 0]
    intensity = np.where(np.all(g == 0, axis=1), beam_intensity, spot_intensity)[None, :].repeat(kx.shape[0], 0)
    images = render_disks(kx, ky, intensity, detector=DETECTOR, radius=BEAM_RADIUS)
    images = finish_patterns(images, detector=DETECTOR, dose=dose, rng=seed)
    return stemkit.datacube(images.reshape(*scan, *DETECTOR.shape), k_step=DETECTOR.k_step, beam_energy_kev=300)


@pytest.fixture
def lattice():
    return lattice_patterns()
