"""How one node is split: its own principal components, a splitter, and the stopping rule.

Every node is split in the space of its own principal components (``node_components``, by
default 8, from the covariance matrix of at most 20,000 of its patterns), so that differences too small to show at the
root stand out deeper in the tree. Splitters:

- :class:`GaussianMixtureSplitter` (automatic): Gaussian mixtures with full covariances
  for k = 1 .. ``k_max``; k is chosen by the Bayesian information criterion (BIC).
  Full covariances matter: counting noise is not isotropic (bright pixels are noisier),
  and a spherical model would split one region along its noisiest direction.
- :class:`KMeansSplitter`: k-means with a given k (the recipe of Shi et al.).
- :class:`HDBSCANSplitter` (automatic): HDBSCAN's clusters; its noise points go to the
  nearest cluster centre, so the children still partition the node.

The stopping rule (checked by ``DivisiveClustering`` and :func:`acceptable`): a node is a leaf when it
is at ``max_depth``, holds fewer than ``2 · min_cluster_size`` patterns, does not vary,
or when no candidate split (best criterion first) both leaves every child at least
``min_cluster_size`` patterns and is spatially coherent: every child's
:func:`spatial_coherence` must reach ``min_coherence``. Noise splits a uniform region into
salt and pepper (coherence ~ 0); real regions are contiguous (coherence ~ 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

VARIANCE_FLOOR = 1e-10
MAX_FIT = 20000
BATCH = 1024


@dataclass(frozen=True)
class Proposal:
    """A candidate split of a node: child index of every member (child 0 the largest)."""

    k: int
    labels: np.ndarray
    score: float
    scores: dict[int, float] = field(default_factory=dict)


def single_threaded(method):
    """Run with one BLAS/OpenMP thread: many small dense problems only contend for threads (10x slower on 2 busy cores)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1):
            return method(*args, **kwargs)

    return wrapper


def node_seed(seed: int, path: tuple[int, ...]) -> int:
    """A seed for the node at ``path`` that does not depend on the order nodes are visited."""
    return int(np.random.SeedSequence([int(seed), len(path), *path]).generate_state(1)[0])


@single_threaded
def project(features: np.ndarray, members: np.ndarray, n_components: int | None, seed: int = 0,
            max_fit: int = MAX_FIT) -> np.ndarray | None:
    """The node's features on its own principal components, scaled to unit mean variance.

    The components are the leading eigenvectors of the covariance matrix of at most
    ``max_fit`` (seeded, random) members, accumulated in float64 batches, so that no
    centred copy of the features is made. With ``n_components=None`` the centred features
    themselves are returned. Returns ``None`` when the features do not vary (identical
    patterns, or no pixel).
    """
    n, d = len(members), features.shape[1]
    if d == 0:
        return None
    mean, gram = _moments(features, members[_subsample(n, max_fit, seed)])
    covariance = gram - np.outer(mean, mean)
    variance = float(np.trace(covariance))
    if variance <= VARIANCE_FLOOR * max(float(np.trace(gram)), 1e-300):
        return None
    if n_components is None or n_components >= d:
        scores = np.concatenate([features[members[s : s + BATCH]] - mean.astype(np.float32) for s in range(0, n, BATCH)])
        return scores / np.float32(np.sqrt(variance / d))  # float32: as many columns as pixels
    _, top = scipy.linalg.eigh(covariance, subset_by_index=[d - n_components, d - 1], driver="evr")
    top = top[:, ::-1]
    top = top * np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])  # a fixed sign per component
    scores = np.concatenate([(features[members[s : s + BATCH]] - mean) @ top for s in range(0, n, BATCH)])
    return scores / np.sqrt(variance / n_components)


def _moments(features: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and second-moment matrix of the members' features, accumulated in float64 batches."""
    d = features.shape[1]
    total = np.zeros(d)
    gram = np.zeros((d, d))
    for start in range(0, len(members), BATCH):
        batch = features[members[start : start + BATCH]].astype(np.float64)
        total += batch.sum(axis=0)
        gram += batch.T @ batch
    return total / len(members), gram / len(members)


def ordered(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0, 1, ... by decreasing cluster size (ties: first member first)."""
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank[np.searchsorted(values, labels)]


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


class GaussianMixtureSplitter:
    """Gaussian mixtures with full covariances; k chosen by BIC.

    Parameters
    ----------
    k_max
        Largest number of children tried.
    max_fit
        Mixtures are fitted to at most this many (seeded, random) patterns of a node and
        then assign all of them.
    n_init
        Fits from different (seeded) k-means starts; the best likelihood is kept.
    """

    name = "gmm"
    automatic = True

    def __init__(self, k_max: int = 6, max_fit: int = MAX_FIT, n_init: int = 2) -> None:
        self.k_max = k_max
        self.max_fit = max_fit
        self.n_init = n_init

    def _fit(self, y: np.ndarray, k: int, seed: int) -> tuple[GaussianMixture, np.ndarray]:
        subset = y[_subsample(len(y), self.max_fit, seed)]
        model = GaussianMixture(k, covariance_type="full", n_init=self.n_init, reg_covar=1e-6, random_state=seed % 2**32)
        model.fit(subset)
        return model, subset

    @single_threaded
    def split(self, y: np.ndarray, k: int, seed: int) -> Proposal:
        """The k-component mixture's split of ``y``."""
        model, subset = self._fit(y, k, seed)
        return Proposal(k, ordered(model.predict(y)), -model.bic(subset) / len(subset))

    @single_threaded
    def candidates(self, y: np.ndarray, seed: int) -> tuple[list[Proposal], dict[int, float], str]:
        """Splits better than one cluster by BIC, best first; the BIC (per pattern) of every k; a note."""
        largest = int(min(self.k_max, len(y) // 2))
        bic: dict[int, float] = {}
        proposals = []
        for k in range(1, largest + 1):
            model, subset = self._fit(y, k, seed)
            bic[k] = float(model.bic(subset) / len(subset))
            if k > 1 and bic[k] < bic[1]:
                proposals.append(Proposal(k, ordered(model.predict(y)), bic[1] - bic[k], {}))
        proposals.sort(key=lambda p: -p.score)
        note = "" if proposals else f"BIC prefers one cluster (k = 1..{largest} tried)"
        return [Proposal(p.k, p.labels, p.score, bic) for p in proposals], bic, note


class KMeansSplitter:
    """k-means with a k given for every node (the recipe of Shi et al.); no automatic k."""

    name = "kmeans"
    automatic = False

    def __init__(self, n_init: int = 10) -> None:
        self.n_init = n_init

    @single_threaded
    def split(self, y: np.ndarray, k: int, seed: int) -> Proposal:
        """The k-means split of ``y``; the score is the fraction of variance explained."""
        model = KMeans(k, n_init=self.n_init, random_state=seed % 2**32).fit(y)
        total = float(((y - y.mean(axis=0)) ** 2).sum())
        return Proposal(k, ordered(model.labels_), 1.0 - float(model.inertia_) / max(total, 1e-300))



class HDBSCANSplitter:
    """HDBSCAN on the node's components: its clusters are the children; noise goes to the nearest centre.

    Parameters
    ----------
    min_cluster_size
        HDBSCAN's smallest cluster.
    max_fit
        HDBSCAN sees at most this many (seeded, random) patterns; the others are assigned
        to the nearest cluster centre.
    """

    name = "hdbscan"
    automatic = True

    def __init__(self, min_cluster_size: int = 10, max_fit: int = MAX_FIT) -> None:
        self.min_cluster_size = min_cluster_size
        self.max_fit = max_fit

    @single_threaded
    def candidates(self, y: np.ndarray, seed: int) -> tuple[list[Proposal], dict[int, float], str]:
        import hdbscan

        subset = _subsample(len(y), self.max_fit, seed)
        model = hdbscan.HDBSCAN(min_cluster_size=self.min_cluster_size, core_dist_n_jobs=1).fit(y[subset])
        found = model.labels_
        clusters = np.unique(found[found >= 0])
        if len(clusters) < 2:
            return [], {}, f"HDBSCAN finds {len(clusters)} cluster(s)"
        centres = np.stack([y[subset][found == c].mean(axis=0) for c in clusters])
        distance = ((y[:, None, :] - centres[None]) ** 2).sum(axis=-1)
        labels = distance.argmin(axis=1)
        score = float(np.mean(model.cluster_persistence_))
        proposal = Proposal(len(clusters), ordered(labels), score, {len(clusters): score})
        return [proposal], proposal.scores, ""

    @single_threaded
    def split(self, y: np.ndarray, k: int, seed: int) -> Proposal:
        proposals, _, note = self.candidates(y, seed)
        if not proposals or proposals[0].k != k:
            found = proposals[0].k if proposals else note
            raise ValueError(f"HDBSCAN chooses k itself and cannot be told k = {k} (it found {found}); "
                             "use splitter='gmm' or 'kmeans' for a manual tree")
        return proposals[0]


def make_splitter(name: str, *, k_max: int, min_cluster_size: int):
    """The splitter called ``name``: ``"gmm"``, ``"kmeans"`` or ``"hdbscan"``."""
    if name == "gmm":
        return GaussianMixtureSplitter(k_max=k_max)
    if name == "kmeans":
        return KMeansSplitter()
    if name == "hdbscan":
        return HDBSCANSplitter(min_cluster_size=min_cluster_size)
    raise ValueError(f"splitter must be 'gmm', 'kmeans' or 'hdbscan'; got {name!r}")


def spatial_coherence(children: np.ndarray, members: np.ndarray, scan_shape: tuple[int, int]) -> np.ndarray:
    """How contiguous each child is on the scan, from 0 (salt and pepper) to 1 (one blob).

    For child c, ``p`` is the fraction of its members' 4-neighbours inside the node that are
    in c too, and ``e = n_c / n`` what ``p`` would be for random labels; the coherence is
    Cohen's ``(p - e) / (1 - e)``. NaN for a child none of whose members has a neighbour in the node.
    """
    grid = np.full(scan_shape[0] * scan_shape[1], -1, dtype=np.int64)
    grid[members] = children
    grid = grid.reshape(scan_shape)
    k = int(children.max()) + 1
    same = np.zeros(k)
    pairs = np.zeros(k)
    for a, b in ((grid[:, :-1], grid[:, 1:]), (grid[:-1, :], grid[1:, :])):
        both = (a >= 0) & (b >= 0)
        for one, other in ((a[both], b[both]), (b[both], a[both])):
            np.add.at(pairs, one, 1)
            np.add.at(same, one[one == other], 1)
    expected = np.bincount(children, minlength=k) / len(children)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = same / pairs
        return np.where(pairs > 0, (observed - expected) / np.where(expected < 1, 1 - expected, 1), np.nan)


def acceptable(proposal: Proposal, members: np.ndarray, scan_shape: tuple[int, int], *,
               min_cluster_size: int, min_coherence: float | None) -> tuple[bool, str, float]:
    """Whether a proposal passes the size and coherence rules; why not; its coherence (worst child)."""
    sizes = np.bincount(proposal.labels, minlength=proposal.k)
    coherence = spatial_coherence(proposal.labels, members, scan_shape)
    worst = float(np.nanmin(coherence)) if np.isfinite(coherence).any() else float("nan")
    if sizes.min() < min_cluster_size:
        return False, f"k={proposal.k} leaves a cluster of {int(sizes.min())} < min_cluster_size={min_cluster_size}", worst
    if min_coherence is not None and np.isfinite(worst) and worst < min_coherence:
        return False, f"k={proposal.k} is not spatially coherent (worst child {worst:.2f} < {min_coherence})", worst
    return True, "", worst
