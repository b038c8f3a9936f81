"""The feature pipeline against naive numpy references, on numpy and odd dask chunks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from stemkit.clustering import ClusteringFeatures
from stemkit.clustering.features import as_lazy, label_sums

from conftest import make_specimen


@pytest.fixture(scope="module")
def specimen(region_patterns):
    return make_specimen(region_patterns, ["reference", "rotated"], "halves", seed=5)


def features(data, **kwargs):
    model = ClusteringFeatures(progress=False, **kwargs)
    return model, model.fit_transform(data)


def test_selection_follows_the_authors_rule(specimen):
    data, _ = specimen
    model, x = features(data)
    values = data.values.reshape(-1, 64, 64).astype(np.float64)
    radius = np.hypot(data.ky.values[:, None], data.kx.values[None, :])
    annulus = model.annulus_.values
    shrunk = (radius >= model.annulus_.attrs["inner"] + 0.01) & (radius < model.annulus_.attrs["outer"] - 0.01)
    assert annulus[shrunk].all() and annulus.sum() < shrunk.sum() * 1.1  # centred coordinates: a tiny mean shift
    log_std = np.where(annulus, np.log(values.std(axis=0) + 1), 0)
    expected = log_std > 0.3 * log_std.max()
    np.testing.assert_array_equal(model.pixels_.values, expected)
    np.testing.assert_allclose(model.log_std_.values, log_std, rtol=1e-9, atol=1e-12)
    assert not model.pixels_.values[radius < model.beam_radius_].any()  # the direct beam is masked
    np.testing.assert_array_equal(x, values[:, expected].astype(np.float32))
    assert model.positions_.attrs["uniform"]  # no descan: coordinates shift, no pixel is resampled


def test_numpy_and_odd_dask_chunks_agree(specimen):
    data, _ = specimen
    _, eager = features(data)
    _, lazy = features(data.chunk({"scan_y": 5, "scan_x": 7}))
    np.testing.assert_array_equal(eager, lazy)
    assert isinstance(as_lazy(data).data, da.Array)


def test_descan_is_centred_before_selection(region_patterns):
    """A pattern shifted by a known descan is resampled back: features match the unshifted ones closely."""
    data, _ = make_specimen(region_patterns, ["reference", "rotated"], "halves", dose=None)
    shifted = data.copy(data=np.roll(data.values, 2, axis=-1))  # +2 px in kx everywhere but one half
    shifted.values[:, :12] = data.values[:, :12]
    shifted.values[:, :12] = np.roll(data.values[:, :12], 1, axis=-1)
    model, _ = features(shifted, centering="pattern")
    assert not model.positions_.attrs["uniform"]
    beam_kx = model.positions_.beam_kx.values
    np.testing.assert_allclose(beam_kx[:, :12], 0.04, atol=0.01)
    np.testing.assert_allclose(beam_kx[:, 12:], 0.08, atol=0.01)
    centred = model.centred(shifted).values
    np.testing.assert_allclose(centred[:, :, 5:-5, 5:-5], data.values[:, :, 5:-5, 5:-5], atol=1e-6 * data.values.max())


@pytest.mark.parametrize("scaling, function", [("log", np.log1p), ("sqrt", np.sqrt)])
def test_scalings(specimen, scaling, function):
    data, _ = specimen
    raw_model, raw = features(data)
    _, scaled = features(data, scaling=scaling)
    np.testing.assert_allclose(scaled, function(raw), rtol=1e-6)


@pytest.mark.parametrize("pca", ["randomized", "incremental"])
def test_pca_keeps_the_variance(specimen, pca):
    data, _ = specimen
    _, raw = features(data)
    model, reduced = features(data, n_components=4, pca=pca)
    assert reduced.shape == (raw.shape[0], 4) and reduced.dtype == np.float32
    explained = reduced.var(axis=0).sum() / raw.var(axis=0).sum()
    assert 0.3 < explained <= 1.0 + 1e-6
    first = np.linalg.svd(raw - raw.mean(0), full_matrices=False)[2][0]
    assert abs(abs(np.dot(model.pca_.components_[0], first)) - 1) < 1e-3


def test_max_pixels_keeps_the_most_variable(specimen):
    data, _ = specimen
    full, _ = features(data)
    capped, x = features(data, max_pixels=25)
    assert x.shape[1] == 25 and capped.pixels_.values.sum() == 25
    assert capped.log_std_.values[capped.pixels_.values].min() >= np.sort(full.log_std_.values[full.pixels_.values])[-25]


def test_label_sums_match_numpy_on_odd_chunks(specimen):
    data, labels = specimen
    labels = labels.copy()
    labels[3:9, 2:5] = 2
    sums, counts = label_sums(as_lazy(data.chunk({"scan_y": 7, "scan_x": 5})), labels, 3, progress=False)
    for label in range(3):
        np.testing.assert_allclose(sums[label], data.values[labels == label].sum(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(counts, np.bincount(labels.ravel()))


def test_bad_parameters_say_what_to_do(specimen):
    data, _ = specimen
    for kwargs, match in [({"centering": "com"}, "centering must be"), ({"scaling": "asinh"}, "scaling must be"),
                          ({"std_fraction": 1.5}, "authors use 0.3"), ({"max_pixels": 0}, "max_pixels"),
                          ({"n_components": -1}, "n_components"), ({"inner": 2.0, "outer": 1.0}, "annulus")]:
        with pytest.raises(ValueError, match=match):
            features(data, **kwargs)
