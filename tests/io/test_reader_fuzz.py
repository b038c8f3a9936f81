"""Fuzzed files: every reader either loads the right array or raises one of stemkit's clear errors.

Valid fixtures of every format are truncated at random lengths or have random bytes
overwritten (hypothesis). Whatever the damage, ``stemkit.load`` must not crash inside a
dependency (IndexError, struct.error, OSError from h5py, ...) and must not return an array
of the wrong shape: it returns the full cube (the damage hit bytes that hold no structure,
e.g. pixel values) or raises FileFormatError / MissingCalibrationError, or FileNotFoundError
when a damaged header points at a data file that does not exist. The examples are fixed
(derandomized) so that CI is reproducible; run with ``--hypothesis-seed`` to explore.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stemkit
from tests.io.test_readers import CASES

# FileNotFoundError: a damaged multi-file header can name a data file that is not there (said, with both names)
CLEAR_ERRORS = (stemkit.FileFormatError, stemkit.MissingCalibrationError, FileNotFoundError)


def damaged_copy(source: Path, target: Path, cut: float, flips: list[tuple[float, int]]) -> Path:
    """Copy a fixture (its whole folder, for multi-file formats), then truncate and overwrite bytes of the main file."""
    shutil.copytree(source.parent, target, dirs_exist_ok=True)
    path = target / source.name
    raw = bytearray(path.read_bytes())
    for position, value in flips:
        raw[int(position * (len(raw) - 1))] = value
    path.write_bytes(bytes(raw[: max(0, int(cut * len(raw)))]))
    return path


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """One valid file per format (each in its own folder) and the arguments that complete it."""
    out = {}
    for case in CASES:
        folder = tmp_path_factory.mktemp(case.name)
        out[case.name] = (case.file(folder), case.needs | ({"scan_shape": case.data().shape[:2]} if "scan_shape" in case.supplies else {}), case)
    return out


@pytest.mark.parametrize("name", [c.name for c in CASES])
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
)
def test_damaged_files_load_correctly_or_fail_clearly(fixtures, tmp_path_factory, name, cut, flips):
    source, needs, case = fixtures[name]
    path = damaged_copy(source, tmp_path_factory.mktemp("fuzz"), cut, flips)
    expected = case.data().shape
    try:
        data = stemkit.load(path, format=case.format, **needs)
        values = np.asarray(data.values)
    except CLEAR_ERRORS as exc:
        assert path.name in str(exc) or path.stem in str(exc), f"the error does not name the file: {exc}"
        return
    assert values.shape[2:] == expected[2:] and int(np.prod(values.shape[:2])) == int(np.prod(expected[:2])), (
        f"a damaged file gave an array of shape {values.shape}, expected {expected}"
    )
