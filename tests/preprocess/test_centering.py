"""Direct-beam centring recovers a known descan to <= 0.05 px."""

import dask.array as da
import numpy as np
import pytest

from stemkit.physics.render import render_disks
from stemkit.preprocess import beam_position, beam_radius, center, fit_descan
from tests.preprocess.conftest import BEAM_RADIUS, DETECTOR, descan_truth, lattice_patterns

PX = DETECTOR.k_step


def test_beam_radius(lattice):
    # the mean pattern is smeared by the descan, so allow a pixel
    assert beam_radius(lattice) == pytest.approx(BEAM_RADIUS, abs=PX)


@pytest.mark.parametrize("method", ["com", "xcorr"])
def test_positions_noiseless(lattice, method):
    positions = beam_position(lattice, method=method, radius=BEAM_RADIUS)
    ky, kx = descan_truth()
    assert np.abs(positions.beam_ky.values - ky).max() / PX <= 0.05
    assert np.abs(positions.beam_kx.values - kx).max() / PX <= 0.05


@pytest.mark.parametrize("method", ["com", "xcorr"])
def test_descan_fit_with_noise_recovers_truth(method):
    data = lattice_patterns(dose=2e5, seed=3)
    fitted = fit_descan(beam_position(data, method=method), order=1)
    ky, kx = descan_truth()
    assert np.abs(fitted.beam_ky.values - ky).max() / PX <= 0.05
    assert np.abs(fitted.beam_kx.values - kx).max() / PX <= 0.05


def test_robust_fit_ignores_outliers(lattice):
    positions = beam_position(lattice, radius=BEAM_RADIUS).copy(deep=True)
    positions.beam_kx.values[2, 3] += 0.5
    positions.beam_ky.values[5, 5] -= 0.3
    robust = fit_descan(positions)
    plain = fit_descan(positions, robust=False)
    ky, kx = descan_truth()
    assert np.abs(robust.beam_kx.values - kx).max() / PX <= 0.05
    assert np.abs(plain.beam_kx.values - kx).max() / PX > 0.2
    assert robust.attrs["beam_kx_outlier_fraction"] > 0


@pytest.mark.parametrize("method", ["com", "xcorr"])
def test_beam_is_found_when_a_bragg_disk_is_brighter(method):
    """A grain at a Bragg condition: one small disk outshines the beam in a quarter of the scan."""
    data = lattice_patterns(beam_intensity=1.0, spot_intensity=0.05)
    ky, kx = descan_truth()
    extra = render_disks(kx.reshape(-1, 1) + 0.5, ky.reshape(-1, 1), np.full((kx.size, 1), 2.0), detector=DETECTOR, radius=0.03)
    extra = extra.reshape(data.shape)
    extra[:, 3:] = 0
    bright = data + extra
    assert float(bright[0, 0].max()) > 2 * float(data[0, 0].max())
    positions = beam_position(bright, method=method, radius=BEAM_RADIUS)
    assert np.abs(positions.beam_kx.values - kx).max() / PX <= 0.05


def test_vacuum_probe_sets_the_search_window():
    """Even a Bragg disk brighter than the beam everywhere is not taken for it, given a vacuum probe."""
    data = lattice_patterns()
    ky, kx = descan_truth()
    extra = render_disks(kx.reshape(-1, 1) + 0.5, ky.reshape(-1, 1), np.full((kx.size, 1), 2.0), detector=DETECTOR, radius=0.03)
    bright = data + extra.reshape(data.shape)
    probe = lattice_patterns(scan=(1, 1), spot_intensity=0.0).values[0, 0]
    for method in ("com", "xcorr"):
        positions = beam_position(bright, method=method, radius=BEAM_RADIUS, probe=probe)
        assert np.abs(positions.beam_kx.values - kx).max() / PX <= 0.05, method


@pytest.mark.parametrize("chunks", [(2, 3), (9, 11), (4, 1)])
def test_center_on_dask_matches_numpy_and_puts_the_beam_at_zero(lattice, chunks):
    lazy = lattice.chunk({"scan_y": chunks[0], "scan_x": chunks[1]})
    centred = center(lazy)
    assert isinstance(centred.data, da.Array)
    np.testing.assert_allclose(centred.values, center(lattice).values, atol=1e-6)
    after = beam_position(centred, radius=BEAM_RADIUS)
    assert np.abs(after.beam_ky.values).max() / PX <= 0.05
    assert np.abs(after.beam_kx.values).max() / PX <= 0.05
    assert centred.attrs["centering"]["how"].startswith("patterns resampled")
    assert float(centred.sum()) == pytest.approx(float(lattice.sum()), rel=1e-3)


def test_uniform_shift_only_moves_coordinates():
    data = lattice_patterns(scan=(1, 1))
    centred = center(data, order=0)
    np.testing.assert_array_equal(centred.values, data.values)
    ky, kx = descan_truth((1, 1))
    assert float(centred.kx[32]) == pytest.approx(-kx[0, 0], abs=0.05 * PX)
    assert centred.kx.attrs["units"] == "1/Å"


def test_bad_arguments(lattice):
    with pytest.raises(ValueError, match="method"):
        beam_position(lattice, method="nope")
    with pytest.raises(ValueError, match="order"):
        fit_descan(beam_position(lattice), order=5)
    with pytest.raises(ValueError, match="probe"):
        beam_position(lattice, method="xcorr", probe=np.ones((3, 3)))
