import dask.array as da
import numpy as np
import pytest
import xarray as xr

import stemkit
from tests.conftest import make_cube


@pytest.fixture
def npy_path(tmp_path):
    path = tmp_path / "scan.npy"
    np.save(path, make_cube().values)
    return path


def test_npy_needs_calibrations_and_says_which(npy_path):
    with pytest.raises(stemkit.MissingCalibrationError) as info:
        stemkit.load(npy_path)
    text = str(info.value)
    assert "beam_energy_kev" in text and "k_step" in text and "scan.npy" in text


@pytest.mark.parametrize("lazy", [False, True])
def test_npy_loads_with_calibrations(npy_path, lazy):
    data = stemkit.load(npy_path, lazy=lazy, k_step=0.025, beam_energy_kev=300, scan_step_nm=(0.5, 0.75))
    assert isinstance(data.data, da.Array) is lazy
    if lazy:
        assert data.chunks[2] == (24,) and data.chunks[3] == (26,)
    expected = make_cube()
    np.testing.assert_array_equal(data.values, expected.values)
    xr.testing.assert_allclose(data.kx, expected.kx)
    assert data.attrs["format"] == "npy" and data.attrs["source"].endswith("scan.npy")


def test_flat_stack_needs_scan_shape(tmp_path):
    path = tmp_path / "flat.npy"
    values = make_cube().values
    np.save(path, values.reshape(-1, *values.shape[2:]))
    with pytest.raises(stemkit.MissingCalibrationError, match="scan_shape"):
        stemkit.load(path, k_step=0.025, beam_energy_kev=300)
    with pytest.raises(ValueError, match="product is 35"):
        stemkit.load(path, k_step=0.025, beam_energy_kev=300, scan_shape=(6, 6))
    data = stemkit.load(path, k_step=0.025, beam_energy_kev=300, scan_shape=(5, 7))
    np.testing.assert_array_equal(data.values, values)


def test_truncated_npy(npy_path):
    npy_path.write_bytes(npy_path.read_bytes()[:-100])
    for lazy in (False, True):
        with pytest.raises(stemkit.FileFormatError, match="scan.npy"):
            stemkit.load(npy_path, lazy=lazy, k_step=0.025, beam_energy_kev=300)


def test_wrong_format_npy(tmp_path):
    path = tmp_path / "fake.npy"
    path.write_bytes(b"this is not numpy" * 10)
    with pytest.raises(stemkit.FileFormatError, match="not a NumPy"):
        stemkit.load(path, k_step=0.025, beam_energy_kev=300)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npy"):
        stemkit.load(tmp_path / "nothere.npy")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"abc")
    with pytest.raises(stemkit.FileFormatError, match="format="):
        stemkit.load(path)
