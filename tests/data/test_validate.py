import dask.array as da
import numpy as np
import pytest

import stemkit
from stemkit import ContractError
from tests.conftest import make_cube


def test_valid_cube_passes_and_is_returned(cube):
    assert stemkit.validate(cube) is cube


def test_dask_cube_passes(dask_cube):
    assert stemkit.validate(dask_cube) is dask_cube


def test_not_a_dataarray():
    with pytest.raises(ContractError, match="stemkit.datacube"):
        stemkit.validate(np.zeros((2, 2, 4, 4)))


def test_transposed_dims_suggest_transpose(cube):
    with pytest.raises(ContractError, match="transpose"):
        stemkit.validate(cube.transpose("scan_x", "scan_y", "ky", "kx"))


def test_wrong_dim_names(cube):
    with pytest.raises(ContractError, match="rename"):
        stemkit.validate(cube.rename(kx="qx"))


def test_missing_coordinate(cube):
    with pytest.raises(ContractError, match="no coordinate for 'kx'"):
        stemkit.validate(cube.drop_vars("kx"))


def test_non_uniform_step(cube):
    kx = cube.kx.values.copy()
    kx[-1] += 0.01
    bad = cube.assign_coords(kx=("kx", kx, cube.kx.attrs))
    with pytest.raises(ContractError, match="non-uniform"):
        stemkit.validate(bad)


def test_wrong_units_and_origin_off_detector(cube):
    bad = cube.assign_coords(ky=("ky", cube.ky.values + 5.0, {"units": "mrad"}))
    with pytest.raises(ContractError) as info:
        stemkit.validate(bad)
    text = str(info.value)
    assert "units 'mrad'" in text and "never reaches 0" in text
    assert len(info.value.problems) == 2


def test_missing_beam_energy(cube):
    bad = cube.copy()
    del bad.attrs["beam_energy_kev"]
    with pytest.raises(ContractError, match="beam_energy_kev"):
        stemkit.validate(bad)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_nan_and_inf_are_reported(cube, backend):
    values = cube.values.copy()
    values[1, 2, 3, 4] = np.nan
    values[0, 0, 0, 0] = np.inf
    bad = cube.copy(data=values if backend == "numpy" else da.from_array(values, chunks=(2, 3, -1, -1)))
    with pytest.raises(ContractError, match="2 intensities are NaN or infinite"):
        stemkit.validate(bad)
    stemkit.validate(bad, check_values=False)


def test_small_negative_noise_is_accepted():
    rng = np.random.default_rng(1)
    cube = make_cube()
    noisy = cube.copy(data=cube.values - 2.0 + rng.normal(0, 0.5, cube.shape).astype("float32"))
    stemkit.validate(noisy)


def test_negative_counts_beyond_noise(cube):
    values = cube.values.copy()
    values -= 2.0  # background near zero: some small negatives
    values[2, 2, 5, 5] = -500.0
    with pytest.raises(ContractError, match="far below the noise"):
        stemkit.validate(cube.copy(data=values))


def test_mostly_negative_data_suggests_wrong_offset(cube):
    with pytest.raises(ContractError, match="offset"):  # the mean is negative
        stemkit.validate(cube.copy(data=cube.values - 1000.0))


def test_complex_dtype(cube):
    with pytest.raises(ContractError, match="real numbers"):
        stemkit.validate(cube.astype("complex64"))


def test_split_patterns_in_chunks(cube):
    bad = cube.chunk({"ky": 5})
    with pytest.raises(ContractError, match="whole patterns"):
        stemkit.validate(bad)
