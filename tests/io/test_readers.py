"""Behaviour every format reader shares, checked on small files written by tests/io/format_writers.py.

Each case writes a 3 x 4 scan (non-square) of non-square patterns (square where the format
requires it) with distinct values per pattern and pixel, so any axis mix-up changes the
values or the shape.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import stemkit
import stemkit.io.lazy
from stemkit.data.units import k_to_inverse_angstrom
from tests.io import format_writers as w

Pair = tuple[float, float]


@dataclass
class Case:
    """One format: how to write a file, what loading it must give, and what it lacks."""

    name: str
    format: str
    suffix: str
    data: Callable[[], np.ndarray]
    write: Callable[[Path, np.ndarray], Path]
    scan_step_nm: Pair | None = None
    k_step: Pair | None = None
    beam_energy_kev: float | None = None
    k_origin: Pair | None = None
    needs: dict = field(default_factory=dict)
    """Arguments the calibrated file still needs (calibrations the format never records)."""
    write_uncalibrated: Callable[[Path, np.ndarray], Path] | None = None
    supplies: dict = field(default_factory=dict)
    """Arguments that complete the uncalibrated file."""
    data_file: Callable[[Path], Path] = lambda path: path

    def file(self, tmp_path: Path, uncalibrated: bool = False) -> Path:
        path = tmp_path / f"scan{self.suffix}"
        writer = self.write_uncalibrated if uncalibrated else self.write
        return writer(path, self.data())


BLO_K = k_to_inverse_angstrom(1 / 62.26 / 20.0, "rad", 200.0)
APP5_K = (k_to_inverse_angstrom(2e-4, "rad", 300.0), k_to_inverse_angstrom(1.5e-4, "rad", 300.0))

CASES = [
    Case(
        "mib", "mib", ".mib", w.cube,
        lambda p, d: w.write_mib(p, d, frames_per_trigger=4),
        needs={"k_step": 0.02, "beam_energy_kev": 300.0},
        write_uncalibrated=lambda p, d: w.write_mib(p, d, hdr=False),
        supplies={"k_step": 0.02, "beam_energy_kev": 300.0, "scan_shape": (3, 4)},
    ),
    Case(
        "blo", "blo", ".blo", w.small_cube, w.write_blo,
        scan_step_nm=(0.5, 0.75), k_step=(BLO_K, BLO_K), beam_energy_kev=200.0,
        write_uncalibrated=lambda p, d: w.write_blo(p, d, sdp=0),
        supplies={"k_step": 0.03},
    ),
    Case(
        "dm3", "dm", ".dm3", w.cube, lambda p, d: w.write_dm_cube(p, d, version=3),
        scan_step_nm=(0.5, 0.75), k_step=(0.012, 0.01), beam_energy_kev=200.0, k_origin=(8, 9),
        write_uncalibrated=lambda p, d: w.write_dm_cube(p, d, version=3, voltage=None),
        supplies={"beam_energy_kev": 200.0},
    ),
    Case(
        "dm4", "dm", ".dm4", w.cube, lambda p, d: w.write_dm_cube(p, d, version=4),
        scan_step_nm=(0.5, 0.75), k_step=(0.012, 0.01), beam_energy_kev=200.0, k_origin=(8, 9),
        write_uncalibrated=lambda p, d: w.write_dm_cube(p, d, version=4, voltage=None),
        supplies={"beam_energy_kev": 200.0},
    ),
    Case(
        "empad", "empad", ".xml",
        lambda: w.cube(detector=(128, 128), dtype="float32", pattern_step=100_000), w.write_empad,
        scan_step_nm=(0.36, 0.36), k_step=(0.01826537, 0.01826537), beam_energy_kev=300.0,
        write_uncalibrated=lambda p, d: w.write_empad(p, d, k_pixel=None),
        supplies={"k_step": 0.02},
        data_file=lambda p: p.with_name("scan_x4_y3.raw"),
    ),
    Case(
        "hspy", "hspy", ".hspy", w.cube, w.write_hspy,
        scan_step_nm=(0.5, 0.75), k_step=(0.012, 0.01), beam_energy_kev=200.0, k_origin=(8, 9),
        write_uncalibrated=lambda p, d: w.write_hspy(p, d, beam_energy_kev=None),
        supplies={"beam_energy_kev": 200.0},
    ),
    Case(
        "py4dstem", "emd", ".h5", lambda: w.cube(dtype="float32"), w.write_py4dstem,
        scan_step_nm=(0.5, 0.75), k_step=(0.012, 0.01),
        needs={"beam_energy_kev": 300.0},
        write_uncalibrated=lambda p, d: w.write_py4dstem(p, d, q_units="pixels"),
        supplies={"beam_energy_kev": 300.0, "k_step": 0.02},
    ),
    Case(
        "arina", "arina", "_master.h5", w.cube, w.write_arina,
        beam_energy_kev=300.0,
        needs={"k_step": 0.02, "scan_shape": (3, 4)},
        write_uncalibrated=lambda p, d: w.write_arina(p, d, photon_energy_ev=None),
        supplies={"k_step": 0.02, "scan_shape": (3, 4), "beam_energy_kev": 300.0},
        data_file=lambda p: p.with_name("scan_data_000001.h5"),
    ),
    Case(
        "app5", "app5", ".app5", lambda: w.cube(dtype="float32"), w.write_app5,
        scan_step_nm=(0.5, 0.75), k_step=APP5_K, beam_energy_kev=300.0,
        write_uncalibrated=lambda p, d: w.write_app5(p, d, high_voltage=None),
        supplies={"beam_energy_kev": 300.0, "k_step": 0.02},
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request) -> Case:
    return request.param


def _step(data, dim: str) -> float:
    return float(data[dim][1] - data[dim][0])


def test_values_axes_and_calibrations(case, tmp_path):
    path = case.file(tmp_path)
    data = stemkit.load(path, **case.needs)
    expected = case.data()
    assert data.dims == ("scan_y", "scan_x", "ky", "kx")
    assert data.shape == expected.shape and data.dtype == expected.dtype
    np.testing.assert_array_equal(data.values, expected)
    assert isinstance(data.data, np.ndarray)
    k_step = case.k_step or (case.needs["k_step"],) * 2
    assert (_step(data, "ky"), _step(data, "kx")) == pytest.approx(k_step, rel=1e-6)
    if case.scan_step_nm is None:
        assert data.attrs["scan_step_uncalibrated"] is True
    else:
        assert (_step(data, "scan_y"), _step(data, "scan_x")) == pytest.approx(case.scan_step_nm, rel=1e-6)
    energy = case.beam_energy_kev or case.needs["beam_energy_kev"]
    assert data.attrs["beam_energy_kev"] == pytest.approx(energy)
    origin = case.k_origin or (expected.shape[2] // 2, expected.shape[3] // 2)
    assert float(data.ky[int(origin[0])]) == pytest.approx(0.0, abs=1e-9)
    assert float(data.kx[int(origin[1])]) == pytest.approx(0.0, abs=1e-9)


def test_attrs_name_source_and_format_and_save_to_netcdf(case, tmp_path):
    path = case.file(tmp_path)
    data = stemkit.load(path, **case.needs)
    assert data.attrs["source"] == str(path)
    assert data.attrs["format"] == case.format
    for key, value in data.attrs.items():
        items = value if isinstance(value, list) else [value]
        assert all(isinstance(v, str | int | float | bool) for v in items), (key, value)


def test_lazy_gives_whole_pattern_chunks_equal_to_eager(case, tmp_path, monkeypatch):
    path = case.file(tmp_path)
    eager = stemkit.load(path, lazy=False, **case.needs)
    # one pattern per chunk, so that every read crosses chunk boundaries
    n_ky, n_kx = eager.shape[2:]
    monkeypatch.setattr(stemkit.io.lazy, "TARGET_CHUNK_BYTES", n_ky * n_kx * eager.dtype.itemsize)
    lazy = stemkit.load(path, lazy=True, **case.needs)
    assert isinstance(lazy.data, da.Array)
    assert lazy.chunks[2] == (n_ky,) and lazy.chunks[3] == (n_kx,)
    assert lazy.data.npartitions > 1
    np.testing.assert_array_equal(lazy.values, eager.values)
    assert lazy.attrs == eager.attrs


def test_lazy_arrays_pickle_for_distributed_workers(case, tmp_path):
    path = case.file(tmp_path)
    lazy = stemkit.load(path, lazy=True, **case.needs)
    restored = pickle.loads(pickle.dumps(lazy.data))
    np.testing.assert_array_equal(restored.compute(), case.data())


def test_large_files_load_lazily(case, tmp_path, monkeypatch):
    path = case.file(tmp_path)
    assert isinstance(stemkit.load(path, **case.needs).data, np.ndarray)
    monkeypatch.setattr(stemkit.io.lazy, "LAZY_THRESHOLD_BYTES", 16)
    data = stemkit.load(path, **case.needs)
    assert isinstance(data.data, da.Array)
    np.testing.assert_array_equal(data.values, case.data())


@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_file_is_a_file_format_error_naming_it(case, tmp_path, lazy):
    path = case.file(tmp_path)
    target = case.data_file(path)
    content = target.read_bytes()
    target.write_bytes(content[: len(content) - 100])
    with pytest.raises(stemkit.FileFormatError) as info:
        stemkit.load(path, lazy=lazy, **{**case.needs, **case.supplies})
    assert target.name in str(info.value) and path.name in str(info.value)


def test_random_bytes_are_a_file_format_error(case, tmp_path):
    path = tmp_path / f"random{case.suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(stemkit.FileFormatError, match=path.name):
        stemkit.load(path, **case.needs)


def test_another_formats_file_is_a_file_format_error(case, tmp_path):
    other = CASES[(CASES.index(case) + 3) % len(CASES)]
    source = other.file(tmp_path)
    path = tmp_path / f"renamed{case.suffix}"
    path.write_bytes(source.read_bytes())
    with pytest.raises(stemkit.FileFormatError, match=path.name):
        stemkit.load(path, **case.needs)
    with pytest.raises(stemkit.FileFormatError, match=path.name):
        stemkit.load(path, format=case.format, **case.needs)


def test_missing_file(case, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"nothere{case.suffix}"):
        stemkit.load(tmp_path / f"nothere{case.suffix}")


def test_missing_calibration_is_named_and_can_be_passed(case, tmp_path):
    path = case.file(tmp_path, uncalibrated=True)
    with pytest.raises(stemkit.MissingCalibrationError) as info:
        stemkit.load(path)
    for argument in case.supplies:
        assert argument in str(info.value)
    data = stemkit.load(path, **case.supplies)
    np.testing.assert_array_equal(data.values, case.data())
    if "k_step" in case.supplies:
        assert _step(data, "kx") == pytest.approx(case.supplies["k_step"])
    if "beam_energy_kev" in case.supplies:
        assert data.attrs["beam_energy_kev"] == case.supplies["beam_energy_kev"]
