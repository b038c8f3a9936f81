"""Small specimens with known regions, built from deformed_flake's noiseless region patterns.

Every region's pattern is taken from :func:`stemkit.physics.specimens.deformed_flake`
(64×64 pixels of 0.04 1/Å, WS2 at [001]); a layout puts them on a 24×24 scan, and
Poisson noise at ``dose`` electrons per pattern is drawn from ``seed``. The truth (strain
and rotation of every region, relative to the WS2 reference lattice) comes with them.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import stemkit
from stemkit.physics.specimens import deformed_flake

SCAN = (24, 24)
K_STEP = 0.04


@pytest.fixture(scope="session")
def region_patterns() -> xr.Dataset:
    """Noiseless flake: one pattern per region name, and the region table."""
    return deformed_flake(scan_shape=(24, 24), pattern_size=64, k_step=K_STEP, dose=None, seed=0)


def pattern_of(flake: xr.Dataset, name: str) -> np.ndarray:
    label = int(np.flatnonzero(flake.region_name.values == name)[0])
    y, x = np.argwhere(flake.region.values == label)[0]
    return flake.intensity.values[y, x]


def truth_of(flake: xr.Dataset, name: str) -> np.ndarray:
    row = int(np.flatnonzero(flake.region_name.values == name)[0])
    return np.array([float(flake[f].values[row]) for f in ("exx", "eyy", "exy", "rotation")])


def layout(kind: str) -> np.ndarray:
    """Region index of every probe position: 'halves' (0 | 1) or 'thirds' (0 | 1 | 2 in columns, 2 a blob)."""
    y, x = np.mgrid[: SCAN[0], : SCAN[1]]
    if kind == "one":
        return np.zeros(SCAN, dtype=int)
    if kind == "halves":
        return (x >= SCAN[1] // 2).astype(int)
    if kind == "thirds":
        labels = (x >= SCAN[1] // 2).astype(int)
        labels[np.hypot(y - 6, x - 17) < 5] = 2
        return labels
    raise ValueError(kind)


def make_specimen(flake: xr.Dataset, names: list[str], kind: str, *, dose: float | None = 1e5, seed: int = 0):
    """A cube whose regions (by ``layout(kind)``) hold the named patterns; returns (data, labels)."""
    labels = layout(kind)
    patterns = np.stack([pattern_of(flake, name) for name in names])[labels]
    if dose is not None:
        patterns = np.random.default_rng(seed).poisson(patterns * dose).astype(np.float32)
    data = stemkit.datacube(patterns.astype(np.float32), k_step=K_STEP, beam_energy_kev=300.0)
    return data, labels
