"""Real instrument files from ../shared/realdata (rosettasciio's test data), checked against rosettasciio and h5py.

Skipped when the folder is absent. The files are read in place, never copied.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

import stemkit
from stemkit.data.units import k_to_inverse_angstrom
from stemkit.io.load import find_format

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REALDATA.is_dir(), reason=f"no real data at {REALDATA}"),
]


def _step(data, dim):
    return float(data[dim][1] - data[dim][0])


def _same_lazily(path, **kwargs):
    eager = stemkit.load(path, lazy=False, **kwargs)
    lazy = stemkit.load(path, lazy=True, **kwargs)
    assert isinstance(lazy.data, da.Array) and lazy.chunks[2:] == ((eager.shape[2],), (eager.shape[3],))
    np.testing.assert_array_equal(lazy.values, eager.values)
    return eager


def test_merlin_mib():
    from rsciio.quantumdetector import file_reader

    path = REALDATA / "001_4x2_6bit.mib"
    with pytest.raises(stemkit.MissingCalibrationError) as info:
        stemkit.load(path)
    assert all(arg in str(info.value) for arg in ("k_step", "beam_energy_kev", "scan_shape"))
    # the file name says 4 x 2: 4 positions per row, 2 rows (rosettasciio guesses the same from the time stamps)
    data = _same_lazily(path, scan_shape=(2, 4), k_step=0.01, beam_energy_kev=300)
    reference = np.asarray(file_reader(str(path))[0]["data"])
    assert data.shape == reference.shape == (2, 4, 256, 256) and data.dtype == np.uint8
    np.testing.assert_array_equal(data.values, reference[..., ::-1, :])  # rosettasciio flips the rows
    assert data.attrs["exposure_s"] == pytest.approx(0.1) and data.attrs["counter_depth"] == 6


def test_nanomegas_blo(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", sys.modules.get("skimage") or types.ModuleType("skimage"))
    from rsciio.blockfile import file_reader

    path = REALDATA / "test1.blo"
    data = _same_lazily(path)
    reference = file_reader(str(path))[0]
    np.testing.assert_array_equal(data.values, reference["data"])
    assert data.shape == (3, 2, 144, 144) and data.dtype == np.uint8
    assert (_step(data, "scan_y"), _step(data, "scan_x")) == pytest.approx((12.8, 12.8))
    assert data.attrs["beam_energy_kev"] == 200.0
    screen_cm = reference["axes"][3]["scale"]  # rosettasciio: cm per pixel on the screen
    assert _step(data, "kx") == pytest.approx(k_to_inverse_angstrom(screen_cm / 20.0, "rad", 200.0))
    assert data.attrs["camera_length_mm"] == 200.0


def test_py4dstem_h5():
    path = REALDATA / "py4DSTEM_size2x3x4x5.h5"
    with pytest.raises(stemkit.MissingCalibrationError, match="beam_energy_kev"):
        stemkit.load(path)
    data = _same_lazily(path, beam_energy_kev=300)
    with h5py.File(path, "r") as handle:
        reference = handle["datacube_root/datacube/data"][()]
    assert data.shape == (2, 3, 4, 5) and data.dtype == np.float32
    np.testing.assert_array_equal(data.values, reference)
    assert _step(data, "scan_x") == pytest.approx(0.126796875)
    assert _step(data, "kx") == pytest.approx(0.044251566616087125)


def test_prismatic_emd():
    path = REALDATA / "Si100_4D.emd"
    data = _same_lazily(path)
    with h5py.File(path, "r") as handle:
        group = handle["4DSTEM_simulation/data/datacubes/CBED_array_depth0000"]
        reference = group["datacube"][()]
        q = group["dim3"][()]
    np.testing.assert_array_equal(data.values, reference)
    assert data.attrs["beam_energy_kev"] == 100.0
    assert _step(data, "kx") == pytest.approx(0.1 * float(q[1] - q[0]), rel=1e-6)  # 1/nm -> 1/Å
    assert float(data.kx[4]) == pytest.approx(0.0, abs=1e-6)
    assert data.attrs["emd_other_datacubes"] == ["4DSTEM_simulation/data/datacubes/CBED_array_depth0001"]


def test_dectris_arina():
    path = REALDATA / "test_00_master.h5"
    assert find_format(path).name == "arina"
    data = _same_lazily(path, scan_shape=(4, 4), k_step=0.01)
    with h5py.File(REALDATA / "test_00_data_000001.h5", "r") as handle:
        reference = handle["entry/data/data"][()]
    assert data.shape == (4, 4, 192, 192) and data.dtype == np.uint32
    np.testing.assert_array_equal(data.values.reshape(16, 192, 192), reference)
    assert data.attrs["beam_energy_kev"] == 300.0
    assert data.attrs["detector"] == "Dectris ARINA CZT"


def test_nanomegas_topspin_app5():
    from rsciio.topspin import file_reader

    path = REALDATA / "topspin_test_B.app5"
    data = _same_lazily(path)
    reference = next(s for s in file_reader(str(path), show_progressbar=False) if np.ndim(s["data"]) == 4)
    assert data.shape == (3, 7, 31, 26) and data.dtype == np.float32
    np.testing.assert_array_equal(data.values, reference["data"])
    assert (_step(data, "scan_y"), _step(data, "scan_x")) == pytest.approx(
        (reference["axes"][0]["scale"], reference["axes"][1]["scale"])
    )
    assert data.attrs["beam_energy_kev"] == 300.0
    assert _step(data, "kx") == pytest.approx(k_to_inverse_angstrom(reference["axes"][3]["scale"], "rad", 300.0))
