"""cluster_view: clicking a dendrogram node shows its label map, mean pattern and difference from its sibling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import xarray as xr

from stemkit.clustering import DivisiveClustering
from stemkit.physics.specimens import polycrystal
from stemkit.viz import cluster_view
from stemkit.viz.cluster import dendrogram_layout
from tests.viz.browser import screenshot, signature, to_screen, wait_for_change, wait_for_plot, wait_for_text


@dataclass
class FakeNode:
    id: int
    parent: int | None
    depth: int
    members: np.ndarray
    children: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class FakeClustering:
    """The protocol cluster_view reads, built by hand: root 0 → (1, 2), node 1 → (3, 4)."""

    tree_: list
    labels_: xr.DataArray
    means_: xr.DataArray


def fake_clustering(data: xr.DataArray) -> FakeClustering:
    n_y, n_x = data.sizes["scan_y"], data.sizes["scan_x"]
    flat = np.arange(n_y * n_x)
    left = flat[(flat % n_x) < n_x // 2]
    right = flat[(flat % n_x) >= n_x // 2]
    top_left, bottom_left = left[left < n_x * (n_y // 2)], left[left >= n_x * (n_y // 2)]
    nodes = [FakeNode(0, None, 0, flat, [1, 2]), FakeNode(1, 0, 1, left, [3, 4]), FakeNode(2, 0, 1, right),
             FakeNode(3, 1, 2, top_left), FakeNode(4, 1, 2, bottom_left)]
    labels = np.empty(n_y * n_x, dtype=int)
    for leaf in (2, 3, 4):
        labels[nodes[leaf].members] = leaf
    patterns = np.asarray(data.values, dtype=float).reshape(n_y * n_x, *data.shape[2:])
    means = np.stack([patterns[n.members].mean(axis=0) for n in nodes])
    return FakeClustering(
        nodes,
        xr.DataArray(labels.reshape(n_y, n_x), dims=("scan_y", "scan_x")),
        xr.DataArray(means, dims=("node", "ky", "kx"), coords={"node": np.arange(5), "ky": data.ky, "kx": data.kx}),
    )


@pytest.fixture(scope="module")
def specimen() -> xr.Dataset:
    return polycrystal(scan_shape=(12, 16), n_grains=4, pattern_size=64, k_step=0.04, seed=1)


def test_dendrogram_layout_puts_parents_above_their_children(specimen):
    layout = dendrogram_layout(fake_clustering(specimen.intensity).tree_)
    assert layout == {3: (0.0, 2.0), 4: (1.0, 2.0), 1: (0.5, 1.0), 2: (2.0, 1.0), 0: (1.25, 0.0)}


def test_node_map_mean_and_sibling_difference(specimen):
    clustering = fake_clustering(specimen.intensity)
    view = cluster_view(clustering, specimen.intensity)
    assert view.sibling(0) is None and view.sibling(1) == 2 and view.sibling(4) == 3
    node_map = view.node_map(1)
    assert np.all(np.isnan(node_map[:, 8:])) and set(np.unique(node_map[:, :8])) == {3.0, 4.0}
    np.testing.assert_allclose(view.difference(3), clustering.means_[3] - clustering.means_[4])
    assert view.difference(0) is None
    with pytest.raises(KeyError, match="no node 9"):
        view.select(9)
    with pytest.raises(ValueError, match="no means_"):
        cluster_view(object.__new__(type("Half", (), {"tree_": [], "labels_": None})), specimen.intensity)


def test_cluster_view_reads_a_fitted_divisive_clustering(specimen):
    clustering = DivisiveClustering(tree={(): 2, (0,): 2}, read_lattice=False, progress=False).fit(specimen.intensity)
    view = cluster_view(clustering, specimen.intensity)
    leaf = clustering.tree_.leaves[0]
    node_map = view.node_map(leaf.id)
    assert np.sum(np.isfinite(node_map)) == leaf.size
    assert view.sibling(leaf.id) in clustering.tree_.siblings(leaf.id)


def test_served_cluster_view_selects_nodes_by_click(specimen, page, serve):
    page, log = page
    clustering = fake_clustering(specimen.intensity)
    url = serve(lambda: cluster_view(clustering, specimen.intensity).panel())
    log.allowed_origins.append(url)
    page.goto(f"{url}/app")
    for name in ("cluster-dendrogram", "cluster-map", "cluster-mean", "cluster-difference"):
        wait_for_plot(page, name)
    wait_for_text(page, "the root has no sibling")
    mean = signature(page, "cluster-mean")
    page.mouse.click(*to_screen(page, "cluster-dendrogram", 1.0, 2.0))  # node 4: bottom-left grains
    wait_for_text(page, "Node 4 minus sibling 3")
    after = wait_for_change(page, "cluster-mean", mean)
    expected = clustering.means_[4].values
    assert after["finite"] == expected.size
    wait_for_text(page, "Node 4: ")
    page.mouse.move(1, 1)
    screenshot(page, "cluster-view")

    mean = signature(page, "cluster-mean")
    page.mouse.click(*to_screen(page, "cluster-map", float(specimen.scan_x[12]), float(specimen.scan_y[6])))
    wait_for_text(page, "Node 2: ")  # a tap on the map selects the leaf there (the right half is leaf 2)
    wait_for_text(page, "Node 2 minus sibling 1")
    wait_for_change(page, "cluster-mean", mean)
    log.assert_clean()
