"""Spatial coherence, node projection, child ordering and the splitters on hand-made points."""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.clustering.splitting import (GaussianMixtureSplitter, HDBSCANSplitter, KMeansSplitter, Proposal,
                                          acceptable, node_seed, ordered, project, spatial_coherence)


def test_coherence_hand_computed():
    # a 2x3 scan, node = all; children [[0, 0, 1], [0, 0, 1]]
    children = np.array([0, 0, 1, 0, 0, 1])
    members = np.arange(6)
    # child 0: neighbour pairs from its members: horizontal 0-0 (x2 rows, counted from both ends: 4), 0-1 (2),
    # vertical 0-0 (2 columns, both ends: 4) -> same 8 of 10; expected 4/6
    # child 1: horizontal 1-0 (2), vertical 1-1 (2) -> same 2 of 4; expected 2/6
    coherence = spatial_coherence(children, members, (2, 3))
    np.testing.assert_allclose(coherence, [(0.8 - 4 / 6) / (1 - 4 / 6), (0.5 - 2 / 6) / (1 - 2 / 6)])


def test_coherence_of_blobs_and_of_noise():
    y, x = np.mgrid[:30, :30]
    halves = (x >= 15).astype(int).ravel()
    assert spatial_coherence(halves, np.arange(900), (30, 30)).min() > 0.9
    noise = np.random.default_rng(0).integers(0, 2, 900)
    assert abs(spatial_coherence(noise, np.arange(900), (30, 30))).max() < 0.1
    members = np.flatnonzero((x + y).ravel() % 2 == 0)  # a checkerboard node: no 4-neighbours inside it
    assert np.isnan(spatial_coherence(np.arange(len(members)) % 2, members, (30, 30))).all()


def test_ordered_numbers_children_by_size():
    np.testing.assert_array_equal(ordered(np.array([5, 5, 2, 2, 2, 9])), [1, 1, 0, 0, 0, 2])
    np.testing.assert_array_equal(ordered(np.array([3, 1, 1, 3])), [0, 1, 1, 0])  # tie: first member first


def test_project_detects_identical_patterns_and_reduces():
    everyone = np.arange(10)
    assert project(np.ones((10, 4)), everyone, 2) is None
    assert project(np.ones((10, 0)), everyone, 2) is None
    x = np.random.default_rng(0).normal(size=(60, 6)) * np.array([5, 3, 1, 1, 1, 1])
    members = np.arange(5, 55)
    y = project(x, members, 3)
    assert y.shape == (50, 3)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    centred = x[members] - x[members].mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scale = np.sqrt((centred**2).sum(axis=1).mean() / 3)
    np.testing.assert_allclose(np.abs(y), np.abs(centred @ vt[:3].T) / scale, rtol=1e-8, atol=1e-10)
    raw = project(x, members, None)
    np.testing.assert_allclose(raw, centred / np.sqrt((centred**2).sum(axis=1).mean() / 6), rtol=1e-5, atol=1e-6)


def test_node_seeds_depend_on_path_not_order():
    assert node_seed(0, (1, 0)) == node_seed(0, (1, 0))
    assert len({node_seed(0, ()), node_seed(0, (0,)), node_seed(0, (1,)), node_seed(1, ())}) == 4


def blobs(k: int, n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), n)
    centres = rng.normal(scale=20, size=(k, 3))
    return centres[truth] + rng.normal(size=(k * n, 3)), truth


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gmm_chooses_k_by_bic(k):
    y, truth = blobs(k)
    proposals, bic, note = GaussianMixtureSplitter(k_max=5).candidates(y, 0)
    if k == 1:
        assert proposals == [] and "BIC prefers one cluster" in note
    else:
        assert proposals[0].k == k and min(bic, key=bic.get) == k
        assert len(np.unique(proposals[0].labels * 10 + truth)) == k  # the partition is the truth's


def test_kmeans_and_hdbscan():
    y, truth = blobs(3)
    split = KMeansSplitter().split(y, 3, 0)
    assert len(np.unique(split.labels * 10 + truth)) == 3 and split.score > 0.9
    proposals, _, _ = HDBSCANSplitter(min_cluster_size=10).candidates(y, 0)
    assert proposals[0].k == 3
    with pytest.raises(ValueError, match="cannot be told k"):
        HDBSCANSplitter(min_cluster_size=10).split(y, 2, 0)


def test_acceptable_applies_size_then_coherence():
    y, x = np.mgrid[:10, :10]
    halves = Proposal(2, (x >= 5).astype(int).ravel(), 1.0)
    assert acceptable(halves, np.arange(100), (10, 10), min_cluster_size=10, min_coherence=0.3)[0]
    ok, why, _ = acceptable(halves, np.arange(100), (10, 10), min_cluster_size=60, min_coherence=0.3)
    assert not ok and "min_cluster_size=60" in why
    noise = Proposal(2, np.random.default_rng(1).integers(0, 2, 100), 1.0)
    ok, why, _ = acceptable(noise, np.arange(100), (10, 10), min_cluster_size=10, min_coherence=0.3)
    assert not ok and "not spatially coherent" in why
