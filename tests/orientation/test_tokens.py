"""Tokens: the direct beam is dropped, order does not matter, units and conventions come from the data."""

import numpy as np
import pytest

from stemkit.orientation import FEATURES, tokens_from_arrays, tokens_from_peaks
from stemkit.orientation.tokens import LAMBDA_SCALE
from stemkit.physics import crystal, simulate_kinematic, wavelength_angstrom
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import find_peaks

K = FEATURES.index("k")
COS, SIN = FEATURES.index("cos_phi"), FEATURES.index("sin_phi")
LOG_I, WAVELENGTH = FEATURES.index("log_intensity"), FEATURES.index("wavelength")


def spots():
    kx = np.array([[0.0, 0.5, -0.25, 0.0, 0.9]])
    ky = np.array([[0.0, 0.0, 0.433, -0.7, 0.1]])
    intensity = np.array([[100.0, 4.0, 2.0, 1.0, 0.0]])
    valid = np.array([[True, True, True, True, False]])
    return kx, ky, intensity, valid


def test_direct_beam_and_invalid_peaks_are_dropped_strongest_first():
    features, mask = tokens_from_arrays(*spots(), beam_energy_kev=300, beam_radius=0.05, max_tokens=6)
    assert features.shape == (1, 6, len(FEATURES)) and mask.tolist() == [[True, True, True, False, False, False]]
    np.testing.assert_allclose(features[0, :3, K], [0.5, np.hypot(0.25, 0.433), 0.7], atol=1e-6)
    np.testing.assert_allclose(features[0, :3, LOG_I], np.log([1.0, 0.5, 0.25]), atol=1e-6)
    assert np.all(features[0, 3:] == 0)


def test_order_of_the_peaks_does_not_matter():
    kx, ky, intensity, valid = spots()
    permutation = [3, 0, 4, 2, 1]
    a = tokens_from_arrays(kx, ky, intensity, valid, beam_energy_kev=300, beam_radius=0.05)
    b = tokens_from_arrays(kx[:, permutation], ky[:, permutation], intensity[:, permutation], valid[:, permutation],
                           beam_energy_kev=300, beam_radius=0.05)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_rotation_about_the_beam_rotates_the_azimuths():
    """R_z(θ) R: every spot turns by θ from +kx towards +ky (DESIGN.md), and |k| is unchanged."""
    xtal = crystal("Cu")
    theta = np.deg2rad(25.0)
    rz = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    base = np.eye(3)
    sims = simulate_kinematic(xtal, np.stack([base, rz @ base]), beam_energy_kev=300, k_max=1.5,
                              excitation_error_width=0.01, s_max=0.03, max_reflections=32)
    features, mask = tokens_from_arrays(sims.kx, sims.ky, sims.intensity, sims.valid, beam_energy_kev=300,
                                        beam_radius=0.05)
    phi0 = np.arctan2(features[0, mask[0], SIN], features[0, mask[0], COS])
    phi1 = np.arctan2(features[1, mask[1], SIN], features[1, mask[1], COS])
    np.testing.assert_allclose(np.sort(features[0, mask[0], K]), np.sort(features[1, mask[1], K]), atol=1e-5)
    turned = np.sort(np.mod(phi0 + theta, 2 * np.pi))
    np.testing.assert_allclose(turned, np.sort(np.mod(phi1, 2 * np.pi)), atol=1e-4)


def test_units_come_from_the_data():
    specimen = polycrystal(scan_shape=(2, 2), n_grains=1, seed=2, dose=1e6)
    data = specimen.intensity
    coarse = data.assign_coords(ky=data.ky * 2, kx=data.kx * 2)  # the same pixels, twice the k calibration
    for name in ("ky", "kx"):
        coarse[name].attrs = dict(data[name].attrs)
    a, ma = tokens_from_peaks(find_peaks(data))
    b, mb = tokens_from_peaks(find_peaks(coarse))
    np.testing.assert_allclose(b[mb][:, K], 2 * a[ma][:, K], rtol=1e-3)
    high = data.copy()
    high.attrs["beam_energy_kev"] = 200.0
    c, _ = tokens_from_peaks(find_peaks(high))
    assert c[0, 0, WAVELENGTH] > a[0, 0, WAVELENGTH], "200 keV electrons have the longer wavelength"
    np.testing.assert_allclose(c[mb][:, WAVELENGTH] * LAMBDA_SCALE, wavelength_angstrom(200.0), rtol=1e-6)
    np.testing.assert_allclose(a[ma][:, WAVELENGTH] * LAMBDA_SCALE, wavelength_angstrom(300.0), rtol=1e-6)
    np.testing.assert_array_equal(c[..., :WAVELENGTH], a[..., :WAVELENGTH])


def test_a_dataset_that_is_not_a_peak_dataset_is_refused():
    specimen = polycrystal(scan_shape=(2, 2), n_grains=1, seed=2)
    with pytest.raises(ValueError, match="find_peaks"):
        tokens_from_peaks(specimen)


def test_the_direct_beam_radius_may_differ_per_pattern():
    kx, ky, intensity, valid = (np.repeat(a, 2, axis=0) for a in spots())
    features, mask = tokens_from_arrays(kx, ky, intensity, valid, beam_energy_kev=300,
                                        beam_radius=np.array([0.05, 0.4]))
    assert mask.sum(axis=1).tolist() == [3, 1], "a probe of radius 0.4 1/Å hides both disks at |k| = 0.5 1/Å"
