"""A small noiseless film whose left third is the unstrained lattice and the rest uniformly deformed."""

import numpy as np
import pytest

from stemkit.physics.specimens import strained_film

SCAN = (8, 9)
KNOWN = {"exx": 0.02, "eyy": -0.01, "exy": 0.006, "rotation": 3.0}


def two_region_fields() -> tuple[dict[str, np.ndarray], np.ndarray]:
    reference = np.zeros(SCAN, bool)
    reference[:, :3] = True
    fields = {name: np.where(reference, 0.0, value) for name, value in KNOWN.items()}
    return fields, reference


@pytest.fixture(scope="session")
def uniform_film():
    """``(film, reference_map)``: 1e7 electrons per pattern (noise negligible), no background."""
    fields, reference = two_region_fields()
    film = strained_film("WS2", SCAN, pattern_size=128, k_step=0.03, dose=1e7, background_fraction=0.0,
                         seed=3, **fields)
    return film, reference


def assert_recovers_known(result, reference: np.ndarray) -> None:
    """The acceptance check of every strain method on ``uniform_film``: the known strain and rotation outside
    the reference region and zero inside it, within 0.001 and 0.3°, and the reference map returned as given."""
    for name, value in KNOWN.items():
        tolerance = 0.3 if name == "rotation" else 1e-3
        np.testing.assert_allclose(result[name].values[~reference], value, atol=tolerance, err_msg=name)
        np.testing.assert_allclose(result[name].values[reference], 0.0, atol=tolerance, err_msg=name)
    assert (result["reference"].values == reference).all()
