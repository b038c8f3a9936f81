"""DivisiveClustering: split the set of diffraction patterns again and again, choosing k and when to stop.

Shi et al. (npj Comput. Mater. 2022) found strain, rotation and ripples in WS2/WSe2 flakes
by splitting the patterns with k-means, typing k by hand at every node. Here k and the
stopping rule are automatic (see :mod:`stemkit.clustering.splitting`), every node is
seeded from ``(seed, path)`` so the tree is reproducible, a manual ``tree=`` reproduces a
given tree, and every split gets a physical reading: the strain and rotation of the
lattice between sibling mean patterns (:mod:`stemkit.clustering.reading`).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections import defaultdict, deque

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from stemkit.clustering.features import ClusteringFeatures, check_data, label_sums
from stemkit.clustering.reading import split_readings
from stemkit.clustering.splitting import acceptable, make_splitter, node_seed, project
from stemkit.clustering.tree import Node, Tree, TreeSpec, k_for, normalise_spec
from stemkit.data.contract import K_DIMS, SCAN_DIMS


class DivisiveClustering:
    """Divisive hierarchical clustering of 4D-STEM diffraction patterns.

    Parameters
    ----------
    splitter
        ``"gmm"``: Gaussian mixtures, k by BIC (automatic; the default); ``"hdbscan"``:
        HDBSCAN's clusters (automatic; with ``max_depth=1`` a flat clustering);
        ``"kmeans"``: k-means, k from ``tree`` (the recipe of Shi et al.).
    tree
        A manual tree instead of the automatic rule: ``{path: k}`` (paths are child indices
        from the root, children numbered by decreasing size; unlisted nodes are leaves), e.g.
        ``{(): 2, (0,): 2, (0, 0): 2, (0, 1): 4}``; or one entry per level, an int for every
        node of the level or one k per node in breadth-first order (1 for a leaf), e.g.
        ``[2, (2, 1), (2, 4)]``. ``fitted.tree_.spec()`` reproduces a fitted tree.
    k_max
        Largest k the automatic splitters try at a node.
    min_cluster_size
        No automatic split leaves a cluster smaller than this.
    min_coherence
        Smallest spatial coherence (0: salt and pepper, 1: contiguous) of every child of an
        automatic split; ``None`` switches the check off (for structure finer than the scan).
    max_depth
        Deepest level of the tree.
    node_components
        Each node is split on this many of its own principal components; ``None``: on the
        features themselves (as Shi et al.).
    features
        A :class:`ClusteringFeatures` (not fitted) to configure the features; default:
        the authors' pipeline with this estimator's seed.
    read_lattice
        Measure strain and rotation between sibling means (:func:`split_readings`).
    peak_threshold, peak_noise
        Passed to :func:`stemkit.preprocess.find_peaks` for the readings (``"poisson"`` for
        data in counts, else ``"uniform"``).
    seed
        Seed of every random choice (PCA, mixtures, k-means, sub-sampling).
    progress
        Show tqdm progress bars.

    Attributes
    ----------
    features_ : ClusteringFeatures
        The fitted feature pipeline.
    tree_ : Tree
        The nodes (parent, children, size, split score, coherence, stop reason).
    labels_ : xarray.DataArray
        Leaf node id of every probe position, on ``(scan_y, scan_x)``.
    level_labels_ : xarray.DataArray
        Node id at every depth, on ``(level, scan_y, scan_x)`` (leaves keep their id below).
    means_ : xarray.DataArray
        Mean centred pattern of every node, on ``(node, ky, kx)``.
    signatures_ : xarray.DataArray
        Every node's mean minus the pooled mean of its siblings (the deformation signature), NaN for the root.
    readings_ : xarray.Dataset or None
        Strain and rotation of every node relative to its reference sibling.
    stop_reason_ : str or None
        Why the data were not split at all (``None`` when they were).
    timings_ : dict
        Wall-clock seconds of each stage: features, splitting, means, readings.
    """

    def __init__(
        self,
        *,
        splitter: str = "gmm",
        tree: TreeSpec | None = None,
        k_max: int = 6,
        min_cluster_size: int = 10,
        min_coherence: float | None = 0.3,
        max_depth: int = 6,
        node_components: int | None = 8,
        features: ClusteringFeatures | None = None,
        read_lattice: bool = True,
        peak_threshold: float = 5.0,
        peak_noise: str = "poisson",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.splitter = splitter
        self.tree = tree
        self.k_max = k_max
        self.min_cluster_size = min_cluster_size
        self.min_coherence = min_coherence
        self.max_depth = max_depth
        self.node_components = node_components
        self.features = features
        self.read_lattice = read_lattice
        self.peak_threshold = peak_threshold
        self.peak_noise = peak_noise
        self.seed = seed
        self.progress = progress

    # -- fitting --------------------------------------------------------------------------
    def fit(self, data: xr.DataArray) -> "DivisiveClustering":
        """Cluster the patterns of ``data`` (numpy or dask; read chunk by chunk).

        Parameters
        ----------
        data
            Canonical 4D DataArray ``(scan_y, scan_x, ky, kx)``.

        Returns
        -------
        DivisiveClustering
            ``self``, fitted.
        """
        self._check_parameters()
        check_data(data)
        self._splitter = make_splitter(self.splitter, k_max=self.k_max, min_cluster_size=self.min_cluster_size)
        self._spec = None if self.tree is None else normalise_spec(self.tree)
        if self._spec is None and not self._splitter.automatic:
            raise ValueError(
                f"the {self.splitter!r} splitter needs k for every node: pass tree={{(): 2, (0,): 2, ...}} "
                "(or a list per level), or use splitter='gmm' or 'hdbscan' to choose k automatically"
            )
        self.features_ = self._feature_model()
        clock = time.perf_counter()
        features = self.features_.fit_transform(data)
        self.timings_ = {"features": time.perf_counter() - clock}
        self.scan_shape_ = (data.sizes["scan_y"], data.sizes["scan_x"])
        clock = time.perf_counter()
        self.tree_ = self._grow(features)
        self.timings_["splitting"] = time.perf_counter() - clock
        root = self.tree_.root
        self.stop_reason_ = root.stop_reason
        if root.stop_reason is not None:
            warnings.warn(f"DivisiveClustering did not split the data: {root.stop_reason}", UserWarning, stacklevel=2)
        self._label_maps(data)
        clock = time.perf_counter()
        self._means(data)
        self.timings_["means"] = time.perf_counter() - clock
        self.readings_ = None
        if self.read_lattice and len(self.tree_) > 1:
            clock = time.perf_counter()
            self.readings_ = split_readings(self.tree_, self.means_, threshold=self.peak_threshold,
                                            noise=self.peak_noise)
            self.timings_["readings"] = time.perf_counter() - clock
        return self

    def _check_parameters(self) -> None:
        if not (isinstance(self.min_cluster_size, int) and self.min_cluster_size >= 1):
            raise ValueError(f"min_cluster_size must be a positive integer; got {self.min_cluster_size!r}")
        if not (isinstance(self.k_max, int) and self.k_max >= 2):
            raise ValueError(f"k_max must be an integer >= 2; got {self.k_max!r}")
        if self.min_coherence is not None and not 0 <= self.min_coherence <= 1:
            raise ValueError(f"min_coherence must lie in [0, 1] or be None (no check); got {self.min_coherence!r}")
        if not (isinstance(self.max_depth, int) and self.max_depth >= 0):
            raise ValueError(f"max_depth must be a non-negative integer; got {self.max_depth!r}")
        if self.node_components is not None and not (isinstance(self.node_components, int) and self.node_components > 0):
            raise ValueError(f"node_components must be a positive integer or None; got {self.node_components!r}")

    def _feature_model(self) -> ClusteringFeatures:
        if self.features is None:
            return ClusteringFeatures(seed=self.seed, progress=self.progress)
        if not isinstance(self.features, ClusteringFeatures):
            raise TypeError(f"features must be a ClusteringFeatures; got {type(self.features).__name__}")
        return copy.deepcopy(self.features)

    def _grow(self, features: np.ndarray) -> Tree:
        n = features.shape[0]
        nodes = [Node(id=0, path=(), parent=None, depth=0, members=np.arange(n))]
        queue = deque(nodes)
        rank_in_level: dict[int, int] = defaultdict(int)
        with tqdm(desc="splitting", unit="node", disable=not self.progress, leave=False) as bar:
            while queue:
                node = queue.popleft()
                rank = rank_in_level[node.depth]
                rank_in_level[node.depth] += 1
                proposal = self._split(node, features, rank)
                bar.update(1)
                if proposal is None:
                    continue
                node.split_score = float(proposal.score)
                node.criterion = dict(proposal.scores)
                for c in range(int(proposal.labels.max()) + 1):
                    child = Node(id=len(nodes), path=(*node.path, c), parent=node.id, depth=node.depth + 1,
                                 members=node.members[proposal.labels == c])
                    nodes.append(child)
                    node.children.append(child.id)
                    queue.append(child)
        return Tree(nodes, self.scan_shape_)

    def _split(self, node: Node, features: np.ndarray, rank: int):
        """The accepted split of ``node``, or None with ``node.stop_reason`` set."""
        seed = node_seed(self.seed, node.path)
        if self._spec is not None:
            return self._manual_split(node, features, rank, seed)
        if node.depth >= self.max_depth:
            node.stop_reason = f"max_depth={self.max_depth} reached"
            return None
        if node.size < 2 * self.min_cluster_size:
            node.stop_reason = f"too small to split: {node.size} patterns < 2 × min_cluster_size={self.min_cluster_size}"
            return None
        y = project(features, node.members, self.node_components, seed)
        if y is None:
            node.stop_reason = self._no_variation_reason(features)
            return None
        proposals, criterion, note = self._splitter.candidates(y, seed)
        node.criterion = dict(criterion)
        if not proposals:
            node.stop_reason = note
            return None
        refusals = []
        for proposal in proposals:
            ok, why, coherence = acceptable(proposal, node.members, self.scan_shape_,
                                            min_cluster_size=self.min_cluster_size, min_coherence=self.min_coherence)
            if ok:
                node.coherence = coherence
                return proposal
            refusals.append(why)
        node.stop_reason = "no acceptable split: " + "; ".join(refusals)
        return None

    def _manual_split(self, node: Node, features: np.ndarray, rank: int, seed: int):
        k = k_for(self._spec, node, rank)
        if k <= 1:
            node.stop_reason = "manual tree: not split"
            return None
        if k > node.size:
            raise ValueError(f"the manual tree asks node {node.path} for k={k} children, but it has {node.size} patterns")
        y = project(features, node.members, self.node_components, seed)
        if y is None:
            node.stop_reason = f"manual tree asked for k={k}, but " + self._no_variation_reason(features)
            return None
        proposal = self._splitter.split(y, k, seed)
        node.coherence = float(np.nanmin(
            acceptable(proposal, node.members, self.scan_shape_, min_cluster_size=1, min_coherence=None)[2]))
        return proposal

    @staticmethod
    def _no_variation_reason(features: np.ndarray) -> str:
        if features.shape[1] == 0:
            return "no detector pixel varies across the scan: all patterns are identical"
        return "the patterns of this node do not vary (identical within round-off)"

    # -- results ----------------------------------------------------------------------------
    def _label_maps(self, data: xr.DataArray) -> None:
        coords = {d: data[d] for d in SCAN_DIMS}
        self.labels_ = xr.DataArray(self.tree_.label_map(), dims=SCAN_DIMS, coords=coords, name="labels",
                                    attrs={"long_name": "leaf node id"})
        levels = np.stack([self.tree_.label_map(depth) for depth in range(self.tree_.depth + 1)])
        self.level_labels_ = xr.DataArray(levels, dims=("level", *SCAN_DIMS),
                                          coords={"level": np.arange(len(levels)), **coords}, name="level_labels",
                                          attrs={"long_name": "node id at each depth of the tree"})

    def _means(self, data: xr.DataArray) -> None:
        leaves = self.tree_.leaves
        leaf_index = np.zeros(self.scan_shape_[0] * self.scan_shape_[1], dtype=np.int64)
        for index, leaf in enumerate(leaves):
            leaf_index[leaf.members] = index
        centred = self.features_.centred(data)
        leaf_sums, _ = label_sums(centred, leaf_index.reshape(self.scan_shape_), len(leaves), progress=self.progress)
        node_sums = np.zeros((len(self.tree_), *leaf_sums.shape[1:]))
        for index, leaf in enumerate(leaves):
            node_id: int | None = leaf.id
            while node_id is not None:
                node_sums[node_id] += leaf_sums[index]
                node_id = self.tree_[node_id].parent
        sizes = np.array([node.size for node in self.tree_], dtype=np.float64)
        coords = {"node": np.arange(len(self.tree_)), **{d: centred[d] for d in K_DIMS}}
        attrs = {k: v for k, v in data.attrs.items() if isinstance(v, (int, float, str))}
        self.means_ = xr.DataArray(node_sums / sizes[:, None, None], dims=("node", *K_DIMS), coords=coords,
                                   name="means", attrs=attrs | {"long_name": "mean centred pattern of the node"})
        signatures = np.full(node_sums.shape, np.nan)
        for node in self.tree_:
            others = self.tree_.siblings(node.id)
            if others:
                pooled = node_sums[others].sum(axis=0) / sizes[others].sum()
                signatures[node.id] = self.means_.values[node.id] - pooled
        self.signatures_ = self.means_.copy(data=signatures).rename("signatures")
        self.signatures_.attrs = attrs | {"long_name": "node mean minus the pooled mean of its siblings"}

    def to_dataset(self) -> xr.Dataset:
        """Everything fitted as one Dataset: label maps, node table, means, signatures and readings."""
        if not hasattr(self, "tree_"):
            raise RuntimeError("DivisiveClustering is not fitted yet: call .fit(data) first")
        result = xr.merge([self.labels_, self.level_labels_, self.means_, self.signatures_, self.tree_.to_dataset()],
                          compat="override")
        if self.readings_ is not None:
            result = result.merge(self.readings_.rename({name: f"reading_{name}" for name in self.readings_.data_vars}))
        result.attrs = {
            "method": "stemkit.DivisiveClustering",
            "splitter": self.splitter,
            "manual_tree": repr(self.tree),
            "k_max": self.k_max,
            "min_cluster_size": self.min_cluster_size,
            "min_coherence": "off" if self.min_coherence is None else self.min_coherence,
            "node_components": "features" if self.node_components is None else self.node_components,
            "seed": self.seed,
            "n_pixels": int(self.features_.pixels_.attrs["n_pixels"]),
            "stop_reason": self.stop_reason_ or "",
        }
        return result
