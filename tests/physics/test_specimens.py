"""Synthetic specimens: deterministic, lazy equals eager, and the ground truth matches the pixels."""

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import stemkit
from stemkit.physics import crystal, quaternion_to_matrix, simulate_kinematic
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import find_peaks


@pytest.fixture(scope="module")
def specimen():
    return polycrystal(scan_shape=(12, 14), n_grains=5, seed=4, dose=1e7, thickness_nm=(30.0, 40.0))


def test_contract_and_ground_truth_maps(specimen):
    stemkit.validate(specimen.intensity)
    assert specimen.intensity.dims == ("scan_y", "scan_x", "ky", "kx")
    assert specimen.quaternion.dims == ("scan_y", "scan_x", "quat")
    np.testing.assert_allclose(np.linalg.norm(specimen.quaternion.values, axis=-1), 1.0)
    assert set(np.unique(specimen.phase.values)) <= {"Cu", "Cu2O"}
    assert specimen.grain.max() < 5 and specimen.intensity.attrs["convergence_mrad"] == 1.0
    totals = specimen.intensity.sum(("ky", "kx")).values
    assert totals.mean() == pytest.approx(1e7, rel=1e-3)


def test_deterministic_and_lazy_equals_eager():
    eager = polycrystal(scan_shape=(6, 5), n_grains=3, seed=7)
    again = polycrystal(scan_shape=(6, 5), n_grains=3, seed=7)
    lazy = polycrystal(scan_shape=(6, 5), n_grains=3, seed=7, lazy=True)
    xr.testing.assert_identical(eager, again)
    assert isinstance(lazy.intensity.data, da.Array)
    np.testing.assert_array_equal(lazy.intensity.values, eager.intensity.values)
    other = polycrystal(scan_shape=(6, 5), n_grains=3, seed=8)
    assert not np.array_equal(other.intensity.values, eager.intensity.values)


def test_found_peaks_sit_on_the_ground_truth_reflections(specimen):
    """Each grain's strong reflections, predicted from its true orientation, are where find_peaks sees disks."""
    peaks = find_peaks(specimen.intensity, threshold=8.0)
    step = specimen.intensity.stem.k_step[1]
    checked = 0
    for grain in np.unique(specimen.grain.values):
        y, x = np.argwhere(specimen.grain.values == grain)[0]
        phase = str(specimen.phase.values[y, x])
        truth = simulate_kinematic(
            crystal(phase), quaternion_to_matrix(specimen.quaternion.values[y, x])[None], beam_energy_kev=300,
            k_max=1.5, thickness=10 * float(specimen.thickness.values[y, x]), dtype=np.float64,
        )
        fraction = truth.beam_fraction()[0]
        strong = truth.valid[0] & (fraction > 2e-4)  # >= 2000 counts at this dose & (np.abs(truth.kx[0]) < 1.4) & (np.abs(truth.ky[0]) < 1.4)
        found = peaks.isel(scan_y=y, scan_x=x)
        fx, fy = found.kx.values[found.valid.values], found.ky.values[found.valid.values]
        for tx, ty in zip(truth.kx[0][strong], truth.ky[0][strong]):
            distance = np.hypot(fx - tx, fy - ty).min() / step
            assert distance < 0.15, f"grain {grain} ({phase}): reflection at ({tx:.3f}, {ty:.3f}) found {distance:.2f} px away"
            checked += 1
    assert checked >= 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_grains"):
        polycrystal(scan_shape=(4, 4), n_grains=0)


def plane_descan(y, x):
    """About 4 px of descan over the scan, along both axes."""
    return 0.04 * (y - 0.5), -0.06 * (x - 0.3)


def test_descan_is_ground_truth_that_centring_recovers():
    """The generator's descan is where the beam lands, to 0.05 px, as preprocessing measures it."""
    from stemkit.preprocess import beam_position, fit_descan

    specimen = polycrystal(scan_shape=(10, 12), n_grains=3, seed=5, dose=1e6, descan=plane_descan)
    positions = fit_descan(beam_position(specimen.intensity))
    step = specimen.intensity.stem.k_step[1]
    assert np.abs(positions.beam_ky.values - specimen.descan_ky.values).max() / step <= 0.05
    assert np.abs(positions.beam_kx.values - specimen.descan_kx.values).max() / step <= 0.05
    assert np.ptp(specimen.descan_kx.values) / step > 2, "the descan spans pixels"


def test_descan_path_lazy_equals_eager_and_without_descan_truth_is_zero():
    eager = polycrystal(scan_shape=(5, 6), n_grains=2, seed=1, descan=plane_descan)
    lazy = polycrystal(scan_shape=(5, 6), n_grains=2, seed=1, descan=plane_descan, lazy=True)
    np.testing.assert_array_equal(lazy.intensity.values, eager.intensity.values)
    plain = polycrystal(scan_shape=(5, 6), n_grains=2, seed=1)
    assert float(np.abs(plain.descan_kx).max()) == 0.0
    with pytest.raises(ValueError, match="descan"):
        polycrystal(scan_shape=(5, 6), n_grains=2, descan=np.zeros((2, 2, 2)))


def test_ellipticity_stretches_the_pattern_and_saturation_clips():
    round_ = polycrystal(scan_shape=(2, 2), n_grains=1, seed=3, dose=None)
    stretched = polycrystal(scan_shape=(2, 2), n_grains=1, seed=3, dose=None, ellipticity=(0.05, 0.0))
    peaks_round = find_peaks(round_.intensity * 1e7, threshold=8.0).isel(scan_y=0, scan_x=0)
    peaks_long = find_peaks(stretched.intensity * 1e7, threshold=8.0).isel(scan_y=0, scan_x=0)
    rx, ry = (peaks_round[v].values[peaks_round.valid.values] for v in ("kx", "ky"))
    lx, ly = (peaks_long[v].values[peaks_long.valid.values] for v in ("kx", "ky"))
    far = np.abs(rx) > 0.3
    assert far.sum() >= 2
    # each stretched peak sits where the round one does, with kx scaled by 1.05 and ky unchanged
    nearest = np.hypot(lx[None] - 1.05 * rx[far, None], ly[None] - ry[far, None]).argmin(axis=1)
    np.testing.assert_allclose(lx[nearest] / rx[far], 1.05, atol=0.01)
    np.testing.assert_allclose(ly[nearest], ry[far], atol=0.01)
    clipped = polycrystal(scan_shape=(2, 2), n_grains=1, seed=3, dose=1e6, saturation=500)
    assert float(clipped.intensity.max()) == 500


@pytest.mark.parametrize("generator", ["polycrystal", "strained_film", "deformed_flake"])
def test_every_generator_can_diffract_dynamically(generator):
    from stemkit.physics import specimens

    make = getattr(specimens, generator)
    args = dict(scan_shape=(6, 6), pattern_size=48, dose=None, seed=2)
    if generator == "polycrystal":
        args |= dict(n_grains=3, thickness_nm=(40.0, 60.0))
    kinematic, dynamical = make(**args), make(diffraction="bloch", **args)
    assert "bloch" in dynamical.intensity.attrs["source"]
    a, b = kinematic.intensity.values, dynamical.intensity.values
    assert a.shape == b.shape and np.all(np.isfinite(b)) and b.min() >= 0
    assert np.abs(a - b).max() > 1e-3 * a.max()  # thick foils: dynamical intensities are not kinematic ones
    with pytest.raises(ValueError, match="kinematic.*bloch|bloch.*kinematic"):
        make(diffraction="multislice", **args)
