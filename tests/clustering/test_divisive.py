"""DivisiveClustering end to end on small specimens with known regions."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import adjusted_rand_score

import stemkit
from stemkit.clustering import ClusteringFeatures, DivisiveClustering

from conftest import make_specimen, truth_of


def fit(data, **kwargs) -> DivisiveClustering:
    return DivisiveClustering(progress=False, **kwargs).fit(data)


@pytest.fixture(scope="module")
def two(region_patterns):
    return make_specimen(region_patterns, ["reference", "strained"], "halves", seed=1)


@pytest.fixture(scope="module")
def three(region_patterns):
    return make_specimen(region_patterns, ["vacuum", "reference", "rotated"], "thirds", seed=2)


@pytest.fixture(scope="module")
def two_fitted(two):
    return fit(two[0])


@pytest.fixture(scope="module")
def three_fitted(three):
    return fit(three[0])


def leaf_of(model: DivisiveClustering, labels: np.ndarray, region: int) -> int:
    """The leaf holding most of a region's positions."""
    values, counts = np.unique(model.labels_.values[labels == region], return_counts=True)
    return int(values[counts.argmax()])


# -- known regions --------------------------------------------------------------------------------
def test_two_regions_split_into_exactly_two_leaves(two, two_fitted):
    data, labels = two
    model = two_fitted
    assert len(model.tree_.leaves) == 2 and model.tree_.root.children == [1, 2]
    assert adjusted_rand_score(labels.ravel(), model.labels_.values.ravel()) == 1.0
    assert model.stop_reason_ is None
    for leaf in model.tree_.leaves:
        assert leaf.stop_reason  # every leaf says why it stopped
    assert model.tree_.root.criterion[2] < model.tree_.root.criterion[1]  # BIC per pattern, lower is better
    assert model.tree_.root.coherence > 0.9


def test_strained_half_reads_the_true_strain(region_patterns, two, two_fitted):
    _, labels = two
    model = two_fitted
    strained = leaf_of(model, labels, 1)
    reference = leaf_of(model, labels, 0)
    reading = model.readings_.sel(node=strained)
    if int(reading.reference) == strained:  # the split's reference is the other half: invert the truth
        reading = model.readings_.sel(node=reference)
        from stemkit.physics.specimens import deformation_gradient, strain_from_deformation
        truth = np.array(strain_from_deformation(np.linalg.inv(deformation_gradient(*truth_of(region_patterns, "strained")))))
    else:
        truth = truth_of(region_patterns, "strained")
    assert str(reading.status.values) == "ok"
    measured = np.array([float(reading[f]) for f in ("exx", "eyy", "exy", "rotation")])
    np.testing.assert_allclose(measured[:3], truth[:3], atol=1e-3)
    assert abs(measured[3] - truth[3]) < 0.1


def test_three_regions_with_vacuum(region_patterns, three, three_fitted):
    _, labels = three
    model = three_fitted
    assert len(model.tree_.leaves) == 3
    assert adjusted_rand_score(labels.ravel(), model.labels_.values.ravel()) == 1.0
    vacuum = leaf_of(model, labels, 0)
    rotated = leaf_of(model, labels, 2)
    readings = model.readings_
    assert "no lattice" in str(readings.status.sel(node=vacuum).values)
    assert np.isnan(float(readings.exx.sel(node=vacuum)))
    assert int(readings.n_lattice_disks.sel(node=vacuum)) < 6
    reference = int(readings.reference.sel(node=rotated))
    sign = 1.0 if reference == leaf_of(model, labels, 1) else -1.0
    assert sign * float(readings.rotation.sel(node=rotated)) == pytest.approx(6.0, abs=0.1)
    assert abs(float(readings.exx.sel(node=rotated))) < 1e-3


def test_means_levels_signatures_and_dataset(three, three_fitted):
    data, labels = three
    model = three_fitted
    tree = model.tree_
    assert model.means_.dims == ("node", "ky", "kx") and model.means_.sizes["node"] == len(tree)
    for node in tree:
        expected = data.values.reshape(-1, *data.shape[2:])[node.members].mean(axis=0)
        np.testing.assert_allclose(model.means_.values[node.id], expected, rtol=1e-6, atol=1e-6)
    assert np.isnan(model.signatures_.values[0]).all()
    child = tree.root.children[0]
    others = tree.siblings(child)
    pooled = np.average(model.means_.values[others], axis=0, weights=[tree[o].size for o in others])
    np.testing.assert_allclose(model.signatures_.values[child], model.means_.values[child] - pooled, atol=1e-9)
    assert model.level_labels_.dims == ("level", "scan_y", "scan_x")
    np.testing.assert_array_equal(model.level_labels_.isel(level=0), 0)
    np.testing.assert_array_equal(model.level_labels_.isel(level=-1), model.labels_)
    result = model.to_dataset()
    for name in ("labels", "level_labels", "means", "signatures", "parent", "size", "stop_reason", "reading_rotation"):
        assert name in result
    assert result.labels.dims == ("scan_y", "scan_x")
    np.testing.assert_array_equal(result.scan_x, data.scan_x)
    assert result.attrs["method"] == "stemkit.DivisiveClustering"


# -- reproducibility --------------------------------------------------------------------------------
def test_same_seed_same_tree_and_numpy_equals_dask(three, three_fitted):
    data, _ = three
    again = fit(data)
    lazy = fit(data.chunk({"scan_y": 5, "scan_x": 7}))  # odd chunks
    assert isinstance(lazy.features_.centred(data.chunk({"scan_y": 5})).data, da.Array)
    for other in (again, lazy):
        np.testing.assert_array_equal(other.labels_.values, three_fitted.labels_.values)
        assert repr(other.tree_) == repr(three_fitted.tree_)
        np.testing.assert_allclose(other.means_.values, three_fitted.means_.values, rtol=1e-12)
        xr.testing.assert_allclose(other.readings_, three_fitted.readings_)


# -- manual trees -------------------------------------------------------------------------------------
def test_manual_tree_is_built_exactly(three):
    data, labels = three
    model = fit(data, splitter="kmeans", tree={(): 2, (0,): 2}, node_components=None)
    assert [node.path for node in model.tree_] == [(), (0,), (1,), (0, 0), (0, 1)]
    assert [len(node.children) for node in model.tree_] == [2, 2, 0, 0, 0]
    assert model.tree_.spec() == {(): 2, (0,): 2}
    as_levels = fit(data, splitter="kmeans", tree=[2, (2, 1)], node_components=None)
    np.testing.assert_array_equal(as_levels.labels_.values, model.labels_.values)
    assert model.tree_[2].stop_reason == "manual tree: not split"


def test_automatic_tree_reproduced_by_its_spec(three, three_fitted):
    data, _ = three
    replay = fit(data, tree=three_fitted.tree_.spec())
    np.testing.assert_array_equal(replay.labels_.values, three_fitted.labels_.values)
    assert [n.path for n in replay.tree_] == [n.path for n in three_fitted.tree_]


def test_kmeans_without_a_tree_says_what_to_do(two):
    with pytest.raises(ValueError, match="needs k for every node"):
        fit(two[0], splitter="kmeans")
    with pytest.raises(ValueError, match="splitter must be"):
        fit(two[0], splitter="spectral")
    with pytest.raises(ValueError, match="positive integer k"):
        fit(two[0], tree={(): 0})
    with pytest.raises(ValueError, match="min_coherence"):
        fit(two[0], min_coherence=2.0)
    with pytest.raises(ValueError, match="one k per node"):
        fit(two[0], tree=[2, (2,)])  # level 1 has two nodes


def test_hdbscan_splitter_finds_the_three_regions(three):
    data, labels = three
    model = fit(data, splitter="hdbscan")
    assert adjusted_rand_score(labels.ravel(), model.labels_.values.ravel()) == 1.0
    flat = fit(data, splitter="hdbscan", max_depth=1)
    assert flat.tree_.depth == 1 and "max_depth" in flat.tree_.leaves[0].stop_reason


# -- degenerate data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reference", "vacuum"])
def test_one_region_is_not_split_and_says_why(region_patterns, name):
    data, _ = make_specimen(region_patterns, [name], "one", seed=3)
    with pytest.warns(UserWarning, match="did not split"):
        model = fit(data)
    assert len(model.tree_) == 1 and model.labels_.values.max() == 0
    assert "BIC prefers one cluster" in model.stop_reason_ or "not spatially coherent" in model.stop_reason_
    assert model.readings_ is None
    assert model.means_.sizes["node"] == 1


def test_identical_patterns_stop_because_nothing_varies(region_patterns):
    data, _ = make_specimen(region_patterns, ["reference"], "one", dose=None)
    with pytest.warns(UserWarning, match="all patterns are identical"):
        model = fit(data)
    assert len(model.tree_) == 1
    assert model.features_.pixels_.attrs["n_pixels"] == 0


def test_noise_split_is_refused_as_incoherent(region_patterns):
    """Sparse counts (300 e⁻ in vacuum) are far from Gaussian and fool BIC; the coherence check refuses the split."""
    data, _ = make_specimen(region_patterns, ["vacuum"], "one", dose=3e2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        unchecked = fit(data, min_coherence=None, max_depth=1, k_max=3, read_lattice=False)
        checked = fit(data, min_coherence=0.3, k_max=3)
    assert len(unchecked.tree_) > 1  # BIC alone splits pure noise
    assert len(checked.tree_) == 1
    assert "not spatially coherent" in checked.stop_reason_


def test_bad_input_errors_name_the_fix(two):
    data, _ = two
    with pytest.raises(TypeError, match="4D DataArray"):
        fit(data.values)
    with pytest.raises(ValueError, match="Transpose"):
        fit(data.transpose("ky", "kx", "scan_y", "scan_x"))
    with pytest.raises(ValueError, match="min_cluster_size"):
        fit(data, min_cluster_size=0)
    with pytest.raises(TypeError, match="ClusteringFeatures"):
        fit(data, features="log")
    with pytest.raises(RuntimeError, match="not fitted"):
        DivisiveClustering().to_dataset()


def test_feature_options_pass_through(two):
    data, labels = two
    model = fit(data, features=ClusteringFeatures(scaling="sqrt", n_components=6, pca="incremental", progress=False))
    assert model.features_.pca_.n_components == 6
    assert adjusted_rand_score(labels.ravel(), model.labels_.values.ravel()) == 1.0


def test_exported_at_stemkit_clustering():
    import stemkit.clustering as clustering

    assert clustering.DivisiveClustering is DivisiveClustering
    assert stemkit is not None
