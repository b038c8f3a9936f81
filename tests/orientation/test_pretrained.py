"""The shipped weights: present, intact, documented, and no worse than their model card on a fixed simulated set."""

import json

import numpy as np
import pytest

from stemkit.orientation import OrientationMapper
from stemkit.orientation.mapper import PRETRAINED_DIR
from stemkit.orientation.publish import refined_on_simulation

NAME = "cu-cu2o"


@pytest.fixture(scope="module")
def mapper():
    return OrientationMapper.pretrained(NAME)


def test_the_weights_are_shipped_with_a_model_card(mapper):
    folder = PRETRAINED_DIR / NAME
    card = (folder / "README.md").read_text()
    assert mapper.weights_sha256_ in card
    assert "python -m stemkit.orientation.train" in card and "How well it does" in card
    assert [c.name for c in mapper.crystals_] == ["Cu", "Cu2O"]
    assert mapper.confidence_model_ is not None
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 5 * 2**20  # a few MB at most


def test_the_weights_meet_their_floor_on_a_fixed_simulated_set(mapper):
    """Floors sit below the figures measured at publication (figures.json), so a regression shows."""
    measured = json.loads((PRETRAINED_DIR / NAME / "figures.json").read_text())["refined_on_simulation_300kev"]
    figures = refined_on_simulation(mapper, n=256, seed=11)
    assert figures["phase_accuracy"] >= measured["phase_accuracy"] - 8.0
    assert figures["within_5deg_or_flagged"] >= measured["within_5deg_or_flagged"] - 10.0
    assert np.isfinite(figures["median_deg"])
