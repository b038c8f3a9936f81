"""Strain and rotation between two sets of Bragg disks, with hand-built lattices."""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.clustering.reading import Peaks, lattice_disks, relative_lattice
from stemkit.physics.specimens import deformation_gradient

PIXEL = 0.025


def hexagonal(extent: int = 4, a: float = 0.366) -> Peaks:
    """A hexagonal reciprocal lattice (first ring at ``a`` 1/Å), origin removed, |g| < 1.6."""
    basis = a * np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]])
    h, k = np.meshgrid(np.arange(-extent, extent + 1), np.arange(-extent, extent + 1))
    g = np.stack([h.ravel(), k.ravel()], axis=1) @ basis.T
    length = np.hypot(*g.T)
    keep = (length > 0) & (length < 1.6)
    return Peaks(g[keep], 1.0 / (1 + length[keep] ** 2))


def deformed(peaks: Peaks, f: np.ndarray, noise: float = 0.0, seed: int = 0, drop: int = 0) -> Peaks:
    g = peaks.k @ np.linalg.inv(f)  # g' = F⁻ᵀ g, row vectors
    g = g + np.random.default_rng(seed).normal(scale=noise, size=g.shape)
    keep = np.arange(len(g)) >= drop
    return Peaks(g[keep], peaks.intensity[keep])


@pytest.mark.parametrize("truth", [(0.02, -0.01, 0.005, 0.0), (0.0, 0.0, 0.0, 6.0), (0.041, 0.041, 0.0, 0.0),
                                   (-0.01, 0.015, -0.004, -3.5), (0.0, 0.0, 0.0, 0.0)])
def test_recovers_strain_and_rotation(truth):
    a = hexagonal()
    b = deformed(a, deformation_gradient(*truth), noise=0.002, drop=3)
    reading = relative_lattice(a, b, pixel=PIXEL)
    assert reading.status == "ok" and reading.n_matched >= 40
    np.testing.assert_allclose([reading.exx, reading.eyy, reading.exy], truth[:3], atol=3e-4)
    assert reading.rotation == pytest.approx(truth[3], abs=0.03)


def test_rotation_is_the_smallest_consistent_with_the_hexagonal_symmetry():
    a = hexagonal()
    b = deformed(a, deformation_gradient(0, 0, 0, 64.0))  # 64° = 60° + 4°
    assert relative_lattice(a, b, pixel=PIXEL).rotation == pytest.approx(4.0, abs=1e-6)


def test_exact_lattices_read_exactly():
    a = hexagonal()
    truth = (0.013, -0.007, 0.002, 2.5)
    reading = relative_lattice(a, deformed(a, deformation_gradient(*truth)), pixel=PIXEL)
    np.testing.assert_allclose([reading.exx, reading.eyy, reading.exy, reading.rotation], truth, atol=1e-10)
    assert reading.residual < 1e-12


def test_vacuum_ring_is_no_lattice():
    angles = np.deg2rad(np.arange(0, 360, 40) + 7)
    ring = Peaks(0.24 * np.stack([np.cos(angles), np.sin(angles)], axis=1), np.ones(9))
    assert lattice_disks(ring) < 6 and lattice_disks(hexagonal()) == len(hexagonal().k)
    reading = relative_lattice(hexagonal(), ring, pixel=PIXEL)
    assert np.isnan(reading.exx) and "no lattice in B" in reading.status
    assert "no lattice in A" in relative_lattice(Peaks(np.zeros((0, 2)), np.zeros(0)), hexagonal(), pixel=PIXEL).status
