"""Simulated training batches: deterministic, physical, and degraded within the stated ranges."""

import numpy as np
import pytest

from stemkit.orientation import FEATURES, Augmentation, simulate_batch
from stemkit.physics import PointGroup, misorientation_angle, reduce_to_fundamental_zone

WAVELENGTH = FEATURES.index("wavelength")


@pytest.fixture(scope="module")
def batch():
    return simulate_batch(("Cu", "Cu2O"), 2000, np.random.default_rng(0))


def test_deterministic_for_a_seed():
    a = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(3))
    b = simulate_batch(("Cu", "Cu2O"), 64, np.random.default_rng(3))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.rotations, b.rotations)


def test_truth_is_proper_and_in_the_fundamental_zone(batch):
    np.testing.assert_allclose(np.linalg.det(batch.rotations), 1.0, atol=1e-9)
    reduced = reduce_to_fundamental_zone(batch.rotations, PointGroup.from_name("m-3m"))
    assert misorientation_angle(reduced, batch.rotations).max() < 1e-4
    assert 0.4 < batch.phase.mean() < 0.6


def test_both_beam_energies_and_realistic_token_counts(batch):
    wavelengths = np.unique(np.round(batch.features[batch.mask][:, WAVELENGTH], 5))
    assert len(wavelengths) == 2
    counts = batch.mask.sum(axis=1)
    assert 4 <= np.median(counts) <= 20, "like find_peaks on polycrystals: a handful to a few tens of disks"
    assert counts.max() <= Augmentation().max_tokens


def test_higher_dose_sees_more_disks():
    low = simulate_batch(("Cu",), 500, np.random.default_rng(1), Augmentation(dose=(1e3, 1e3)))
    high = simulate_batch(("Cu",), 500, np.random.default_rng(1), Augmentation(dose=(1e6, 1e6)))
    assert high.mask.sum(1).mean() > 1.5 * low.mask.sum(1).mean()
