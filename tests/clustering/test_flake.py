"""The full deformed_flake (13 regions, 11 deformation classes) in automatic mode."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from stemkit.clustering import DivisiveClustering
from stemkit.physics.specimens import deformation_gradient, deformed_flake, strain_from_deformation

FIELDS = ("exx", "eyy", "exy", "rotation", "tilt_x", "tilt_y", "thickness")


def deformation_classes(flake) -> np.ndarray:
    """Regions with the same material, strain, rotation, tilts and thickness have identical patterns: one class."""
    keys = [tuple(np.round([float(flake[f].values[i]) for f in FIELDS], 9)) + (str(flake.material.values[i]),)
            for i in range(flake.sizes["region_id"])]
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return np.array([index[key] for key in keys])


def test_flake_regions_and_split_readings():
    flake = deformed_flake(scan_shape=(48, 48), pattern_size=96, k_step=0.03, seed=4, lazy=True)
    model = DivisiveClustering(progress=False).fit(flake.intensity)
    regions = flake.region.values
    classes = deformation_classes(flake)[regions]
    assert adjusted_rand_score(classes.ravel(), model.labels_.values.ravel()) >= 0.95
    f = deformation_gradient(flake.exx.values, flake.eyy.values, flake.exy.values, flake.rotation.values)
    checked = 0
    for node in model.tree_.nodes[1:]:
        reading = model.readings_.sel(node=node.id)
        if str(reading.status.values) != "ok":
            continue
        lattices = []
        for members in (node.members, model.tree_[int(reading.reference)].members):
            values, counts = np.unique(regions.ravel()[members], return_counts=True)
            main = values[counts.argmax()]
            pure = np.allclose(f[values], f[main], atol=1e-12) and not flake.is_vacuum.values[main]
            lattices.append(f[main] if pure else None)
        if any(lattice is None for lattice in lattices):
            continue
        truth = np.array(strain_from_deformation(lattices[0] @ np.linalg.inv(lattices[1])))
        measured = np.array([float(reading[name]) for name in ("exx", "eyy", "exy", "rotation")])
        np.testing.assert_allclose(measured[:3], truth[:3], atol=1e-3)
        assert abs(measured[3] - truth[3]) < 0.1
        checked += 1
    assert checked >= 3
