"""Simulated training batches: deterministic, physical, degraded within the stated ranges, and like find_peaks."""

import numpy as np
import pytest

from stemkit.orientation import FEATURES, Augmentation, simulate_batch
from stemkit.orientation.calibration import compare_with_peak_finder
from stemkit.orientation.simulate import Spots, degrade
from stemkit.physics import PointGroup, misorientation_angle, reduce_to_fundamental_zone, wavelength_angstrom
from stemkit.orientation.tokens import LAMBDA_SCALE

WAVELENGTH = FEATURES.index("wavelength")


@pytest.fixture(scope="module")
def batch():
    return simulate_batch(("Cu", "Cu2O"), 2000, np.random.default_rng(0))


def test_deterministic_for_a_seed():
    a = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(3))
    b = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(3))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    c = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(4))
    assert not np.array_equal(a.rotations, c.rotations)


def test_truth_is_proper_and_in_the_fundamental_zone(batch):
    np.testing.assert_allclose(np.linalg.det(batch.rotations), 1.0, atol=1e-9)
    reduced = reduce_to_fundamental_zone(batch.rotations, PointGroup.from_name("m-3m"))
    assert misorientation_angle(reduced, batch.rotations).max() < 1e-4
    assert 0.4 < batch.phase.mean() < 0.6


def test_beam_energies_200_and_300_kev_and_a_range(batch):
    energies = batch.conditions.beam_energy_kev
    assert 0.7 < np.isin(energies, (200.0, 300.0)).mean() < 0.9
    assert energies.min() >= 60.0 and energies.max() <= 300.0 and len(np.unique(energies)) > 5
    wavelength = batch.features[batch.mask][:, WAVELENGTH] * LAMBDA_SCALE
    owner = np.repeat(np.arange(len(energies)), batch.mask.sum(axis=1))
    expected = np.array([wavelength_angstrom(e) for e in energies])[owner]
    np.testing.assert_allclose(wavelength, expected, rtol=1e-6)


def test_realistic_token_counts(batch):
    counts = batch.mask.sum(axis=1)
    assert 4 <= np.median(counts) <= 20, "like find_peaks on polycrystals: a handful to a few tens of disks"
    assert counts.max() <= Augmentation().max_tokens


def test_higher_dose_sees_more_disks():
    low = simulate_batch(("Cu",), 500, np.random.default_rng(1), Augmentation(dose=(1e3, 1e3)))
    high = simulate_batch(("Cu",), 500, np.random.default_rng(1), Augmentation(dose=(1e6, 1e6)))
    assert high.mask.sum(1).mean() > 1.5 * low.mask.sum(1).mean()


@pytest.fixture(scope="module")
def seen():
    """Spots of every strength on a grid, degraded with the default ranges."""
    rng = np.random.default_rng(7)
    n, width = 4000, 12
    angle = rng.uniform(0, 2 * np.pi, size=(n, width))
    k = rng.uniform(0.3, 0.9, size=(n, width))
    fraction = 10 ** rng.uniform(-7, -1, size=(n, width))
    spots = Spots(kx=k * np.cos(angle), ky=k * np.sin(angle), fraction=fraction)
    return degrade(spots, np.full(n, 1e6), rng, Augmentation())


def test_weak_disks_are_missed_and_strong_ones_found(seen):
    true = ~seen.false
    ratio = seen.expected / seen.limit[:, None]
    strong, weak = true & (ratio > 10), true & (ratio < 0.2)
    assert seen.valid[strong].mean() > 0.9  # a few lost to dropout (3 %) and the detector edge
    assert seen.valid[weak].mean() < 0.02


def test_positions_jitter_and_shift_within_the_stated_ranges(seen):
    shift_px = np.hypot(*seen.shift.T) / seen.k_step
    assert shift_px.max() <= 0.3 + 1e-9 and shift_px.mean() > 0.1
    strong = ~seen.false & (seen.expected > 1e4) & seen.valid
    dx = (seen.kx - seen.clean_kx - seen.shift[:, :1]) / seen.k_step[:, None]
    dy = (seen.ky - seen.clean_ky - seen.shift[:, 1:]) / seen.k_step[:, None]
    sigma_px = np.sqrt(np.mean(np.concatenate([dx[strong], dy[strong]]) ** 2))
    assert 0.05 < sigma_px < 0.2, "strong disks: the 0.02-0.2 px floor"
    weak = ~seen.false & (seen.expected < 100) & seen.valid
    assert np.sqrt(np.mean(dx[weak] ** 2)) > 2 * sigma_px, "weak disks: centre-of-mass noise of few counts"


def test_intensity_noise_is_log_normal_of_the_stated_spread(seen):
    strong = ~seen.false & (seen.expected > 1e4)
    spread = np.std(np.log(seen.counts[strong] / seen.expected[strong]))
    assert 0.33 < spread < 0.47, "σ drawn from 0.3-0.5 per pattern, Poisson negligible here"


def test_false_peaks_are_few_faint_and_on_the_detector(seen):
    false = seen.false & seen.valid
    per_pattern = false.sum(axis=1).mean()
    assert 0.08 < per_pattern < 0.2, "mean rate drawn from 0-0.3"
    relative = seen.counts[false] / np.broadcast_to(seen.limit[:, None], seen.counts.shape)[false]
    assert relative.min() >= 1.0 and relative.max() <= 3.0
    half = Augmentation().detector_half_width[1] + Augmentation().detector_offset
    assert np.abs(seen.kx[seen.valid]).max() < half and np.abs(seen.ky[seen.valid]).max() < half


def test_simulated_peaks_look_like_find_peaks_on_rendered_patterns():
    (dose, found, simulated), = compare_with_peak_finder(doses=(1e5,), scan_shape=(8, 8), n_grains=24, seed=1)
    assert found.disks_median / 1.5 <= simulated.disks_median <= 1.5 * found.disks_median
    assert found.detection_counts_50 / 2 <= simulated.detection_counts_50 <= 2 * found.detection_counts_50
    assert simulated.position_error_px_median < 0.5 and found.position_error_px_median < 0.5
    assert abs(simulated.log_range_median - found.log_range_median) < 1.5


def test_a_share_of_the_samples_is_dynamical():
    from stemkit.orientation.simulate import bloch_spots, draw_conditions, kinematic_spots
    from stemkit.physics import crystal

    crystals = [crystal("Cu"), crystal("Cu2O")]
    aug = Augmentation(bloch_fraction=1.0, thickness_nm=(30.0, 60.0))
    conditions = draw_conditions(crystals, 24, np.random.default_rng(5), aug)
    members = np.arange(24)
    dynamical = bloch_spots(crystals, conditions, members, 0.05, aug, 64)
    kinematic = kinematic_spots(crystals, conditions, aug.s_max, 64)
    total = dynamical.fraction.sum(axis=1)
    assert np.all((total > 0) & (total < 1))  # the direct beam and absorption keep the rest
    # thick foils: the brightest spots' shares are not the kinematic ones
    top = lambda spots: np.sort(spots.fraction, axis=1)[:, -3:]  # noqa: E731
    assert np.median(np.abs(top(dynamical) - top(kinematic)) / top(kinematic).clip(1e-9)) > 0.2
    batch = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(6), Augmentation(bloch_fraction=0.5))
    assert batch.mask.sum(axis=1).mean() > 3
    again = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(6), Augmentation(bloch_fraction=0.5))
    np.testing.assert_array_equal(batch.features, again.features)


def test_a_simulated_scan_is_grains_of_patterns_each_degraded_on_its_own():
    from stemkit.orientation.simulate import simulate_seen_map
    from stemkit.physics import crystal

    crystals = [crystal("Cu"), crystal("Cu2O")]
    conditions, seen = simulate_seen_map(crystals, (12, 10), 6, seed=3, augmentation=Augmentation(bloch_fraction=0.0),
                                         beam_energy_kev=300.0)
    assert conditions.rotations.shape == (120, 3, 3) and seen.kx.shape[0] == 120
    grains = np.unique(conditions.rotations.reshape(120, -1), axis=0, return_inverse=True)[1].ravel()
    assert 2 <= len(np.unique(grains)) <= 6
    same_grain = grains[:-1] == grains[1:]  # side by side along the rows: mostly the same grain
    assert same_grain.mean() > 0.6
    first, second = np.flatnonzero(grains == grains[0])[:2]
    assert not np.array_equal(seen.counts[first], seen.counts[second])  # same spots, their own noise
    np.testing.assert_array_equal(conditions.phase[grains == grains[0]], conditions.phase[0])
