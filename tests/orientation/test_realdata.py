"""The orientation pipeline on real instrument files from ../shared/realdata: it runs, or says why it cannot.

Skipped when the folder is absent. The files are read in place, never copied. The shipped weights know
Cu and Cu2O only, so the answers are not checked for accuracy: the pipeline must run on real
detector noise, real peak shapes and real calibrations (find_peaks, the model, the refinement and
the neighbours' pass) and give a well-formed map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stemkit
from stemkit.orientation import OrientationMapper

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REALDATA.is_dir(), reason=f"no real data at {REALDATA}"),
]


@pytest.fixture(scope="module")
def mapper():
    return OrientationMapper.pretrained("cu-cu2o")


@pytest.mark.parametrize("name", ["test1.blo", "topspin_test_B.app5"])
def test_a_real_spot_pattern_scan_is_mapped(mapper, name):
    data = stemkit.load(REALDATA / name, lazy=False)
    if "beam_energy_kev" not in data.attrs:
        data.attrs["beam_energy_kev"] = 200.0  # NanoMegas precession instruments: commonly 200 kV
    result = mapper.predict(data, progress=False)
    assert result["quaternion"].shape == (*data.shape[:2], 4)
    answered = result["n_peaks"].values > 0
    q = result["quaternion"].values[answered]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-5)
    assert np.isnan(result["quaternion"].values[~answered]).all()
    assert ((result["confidence"] >= 0) & (result["confidence"] <= 1)).all()
    assert result["from_neighbour"].dtype == bool


def test_patterns_too_small_for_bragg_disks_are_refused_with_the_reason(mapper):
    data = stemkit.load(REALDATA / "Si100_4D.emd", lazy=False)
    with pytest.raises(ValueError, match=r"patterns of 8 x 8 px are too small to find Bragg disks"):
        mapper.predict(data, progress=False)
