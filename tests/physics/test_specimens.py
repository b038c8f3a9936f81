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
