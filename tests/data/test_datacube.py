import dask.array as da
import numpy as np
import pytest

import stemkit
from stemkit.data import DIMS


def test_dims_coordinates_and_units():
    cube = stemkit.datacube(np.zeros((3, 4, 10, 12)), scan_step_nm=(2.0, 0.5), k_step=(0.01, 0.02), beam_energy_kev=200)
    assert cube.dims == DIMS and cube.name == "intensity"
    np.testing.assert_allclose(cube.scan_y, [0, 2, 4])
    np.testing.assert_allclose(cube.scan_x, [0, 0.5, 1.0, 1.5])
    assert float(cube.ky[5]) == 0.0 and float(cube.kx[6]) == 0.0
    np.testing.assert_allclose(np.diff(cube.kx), 0.02)
    np.testing.assert_allclose(np.diff(cube.ky), 0.01)
    assert cube.scan_x.attrs["units"] == "nm" and cube.kx.attrs["units"] == "1/Å"
    assert cube.attrs["beam_energy_kev"] == 200.0


def test_fractional_origin_puts_zero_at_the_beam():
    cube = stemkit.datacube(np.zeros((1, 1, 8, 8)), k_step=0.1, beam_energy_kev=300, k_origin=(2.5, 3.25))
    assert np.isclose(float(cube.ky[0]), -0.25) and np.isclose(float(cube.kx[0]), -0.325)
    assert cube.stem.k_origin == pytest.approx((2.5, 3.25))


def test_dask_stays_lazy_with_whole_patterns():
    array = da.zeros((6, 6, 16, 16), chunks=(2, 3, 8, 8))
    cube = stemkit.datacube(array, k_step=0.02, beam_energy_kev=300)
    assert isinstance(cube.data, da.Array)
    assert cube.chunks[2] == (16,) and cube.chunks[3] == (16,)
    stemkit.validate(cube)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k_step": 0.0}, "positive"),
        ({"k_step": -0.1}, "positive"),
        ({"beam_energy_kev": 0}, "beam_energy_kev"),
        ({"beam_energy_kev": float("nan")}, "beam_energy_kev"),
        ({"scan_step_nm": (1, 2, 3)}, "scan_step_nm"),
    ],
)
def test_bad_calibrations_are_refused(kwargs, match):
    args = {"k_step": 0.02, "beam_energy_kev": 300} | kwargs
    with pytest.raises(ValueError, match=match):
        stemkit.datacube(np.zeros((2, 2, 4, 4)), **args)


def test_wrong_number_of_axes_says_how_to_fix():
    with pytest.raises(ValueError, match="reshape"):
        stemkit.datacube(np.zeros((4, 16, 16)), k_step=0.02, beam_energy_kev=300)


def test_calibrations_are_required():
    with pytest.raises(TypeError, match="k_step|beam_energy_kev"):
        stemkit.datacube(np.zeros((2, 2, 4, 4)))  # type: ignore[call-arg]
