"""Detector rendering: geometry to a small fraction of a pixel, conserved intensity, noise statistics."""

import numpy as np
import pytest

from stemkit.physics.render import (
    Detector,
    amorphous_ring,
    disk_radius,
    distortion_matrix,
    finish_patterns,
    lorentzian_background,
    render_disks,
)

DET = Detector(shape=(64, 72), k_step=0.02)


def centroid_px(image):
    rows, cols = np.indices(image.shape)
    return (image * rows).sum() / image.sum(), (image * cols).sum() / image.sum()


@pytest.mark.parametrize("kx, ky", [(0.0, 0.0), (0.1234, -0.2071), (-0.3013, 0.0577)])
@pytest.mark.parametrize("radius", [0.0, 0.05, 0.11])
def test_disk_centroid_and_sum_are_exact(kx, ky, radius):
    image = render_disks(np.array([[kx]]), np.array([[ky]]), np.array([[2.5]]), detector=DET, radius=radius)[0]
    assert image.sum() == pytest.approx(2.5, rel=1e-5)
    row, col = centroid_px(image)
    assert row == pytest.approx(32 + ky / 0.02, abs=1e-4)
    assert col == pytest.approx(36 + kx / 0.02, abs=1e-4)


def test_disk_radius_in_pixels():
    radius = 0.1  # 5 px
    image = render_disks(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), detector=DET, radius=radius)[0]
    area = image.sum() / image.max()  # pixels fully inside count 1, edge pixels their coverage
    assert area == pytest.approx(np.pi * 5**2, rel=0.05)


def test_disk_radius_from_convergence():
    # 1 mrad at 300 keV (λ = 0.019687 Å): 0.0508 1/Å
    assert disk_radius(1.0, 300.0) == pytest.approx(1e-3 / 0.0196875, rel=1e-4)


def test_batch_and_padding():
    kx = np.array([[0.0, 0.2, 0.0], [0.0, -0.2, 0.1]])
    ky = np.zeros_like(kx)
    intensity = np.array([[1.0, 0.3, 0.0], [1.0, 0.2, 0.1]])  # 0 = padding
    images = render_disks(kx, ky, intensity, detector=DET, radius=0.04)
    assert images.shape == (2, 64, 72) and images.dtype == np.float32
    np.testing.assert_allclose(images.sum(axis=(1, 2)), [1.3, 1.3], rtol=1e-5)
    assert images[0, 32, 36 + 10] > 0 and images[1, 32, 36 - 10] > 0 and images[0, 32, 36 - 10] == 0


def test_reflections_off_the_detector_are_dropped():
    image = render_disks(np.array([[5.0, 0.0]]), np.array([[0.0, 0.0]]), np.ones((1, 2)), detector=DET, radius=0.04)
    assert image.sum() == pytest.approx(1.0, rel=1e-5)


def test_distortion_moves_spots_and_stretches_disks():
    matrix = distortion_matrix(0.1, 0.0)  # 10 % stretch along kx
    image = render_disks(np.array([[0.2]]), np.array([[0.2]]), np.ones((1, 1)), detector=DET, radius=0.1, distortion=matrix)[0]
    row, col = centroid_px(image)
    assert col == pytest.approx(36 + 0.22 / 0.02, abs=0.01) and row == pytest.approx(32 + 10, abs=1e-4)
    rows, cols = np.nonzero(image > 0.5 * image.max())
    assert np.ptp(cols) > np.ptp(rows)


def test_backgrounds_are_unit_sum_and_centred():
    lor = lorentzian_background(DET, gamma=0.2)
    ring = amorphous_ring(DET, k_ring=0.4, width=0.03)
    assert lor.sum() == pytest.approx(1.0, rel=1e-5) and ring.sum() == pytest.approx(1.0, rel=1e-5)
    assert np.unravel_index(lor.argmax(), lor.shape) == (32, 36)
    assert ring[32, 36] < ring[32, 36 + 20]


def test_background_mixing_and_dose():
    signal = render_disks(np.zeros((200, 1)), np.zeros((200, 1)), np.ones((200, 1)), detector=DET, radius=0.05)
    background = lorentzian_background(DET, gamma=0.3)
    noisy = finish_patterns(signal, detector=DET, background=background, background_fraction=0.7, dose=5000, rng=1)
    assert noisy.sum(axis=(1, 2)).mean() == pytest.approx(5000, rel=0.01)
    clean = finish_patterns(signal, detector=DET, background=background, background_fraction=0.7)
    assert clean[0].sum() == pytest.approx(1.0, rel=1e-5)
    # Poisson: variance equals mean in every pixel
    pixel = noisy[:, 32, 36]
    assert pixel.var() == pytest.approx(pixel.mean(), rel=0.25)
    again = finish_patterns(signal, detector=DET, background=background, background_fraction=0.7, dose=5000, rng=1)
    np.testing.assert_array_equal(noisy, again)


def test_psf_and_saturation():
    det = Detector(shape=(64, 72), k_step=0.02, psf_sigma_px=1.5, saturation=100)
    signal = render_disks(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), detector=det, radius=0.0)
    blurred = finish_patterns(signal, detector=det)
    assert blurred[0].max() < signal[0].max() and blurred.sum() == pytest.approx(1.0, rel=1e-3)
    counts = finish_patterns(signal, detector=det, dose=1e5, rng=0)
    assert counts.max() == 100


def test_bad_arguments():
    with pytest.raises(ValueError, match="background_fraction"):
        finish_patterns(np.zeros((1, 4, 4)), detector=DET, background_fraction=1.5)
    with pytest.raises(ValueError, match="needs a background"):
        finish_patterns(np.zeros((1, 4, 4)), detector=DET, background_fraction=0.5)
    with pytest.raises(ValueError, match="n_reflections"):
        render_disks(np.zeros(3), np.zeros(3), np.ones(3), detector=DET, radius=0.1)
