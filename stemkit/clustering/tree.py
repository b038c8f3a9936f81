"""The cluster tree: nodes with parent, children, size, split score and why a leaf stopped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr


@dataclass
class Node:
    """One cluster of patterns.

    Attributes
    ----------
    id
        Index in :attr:`Tree.nodes` (breadth-first order; the root is 0). Label maps hold these ids.
    path
        Child indices from the root, e.g. ``(1, 0)``: the largest child of the root's second child.
        Children are numbered by decreasing size.
    parent
        Id of the parent (``None`` for the root).
    depth
        0 for the root.
    members
        Flat indices (C order over ``(scan_y, scan_x)``) of the patterns in the node.
    children
        Ids of the children (empty for a leaf).
    split_score
        The splitter's criterion for the chosen split: the BIC gain per pattern (``gmm``),
        the fraction of variance explained (``kmeans``), the mean cluster persistence (``hdbscan``).
    criterion
        The criterion for every k tried (``gmm``: BIC per pattern, lower is better).
    coherence
        Spatial coherence of the chosen split (its least coherent child).
    stop_reason
        Why the node was not split; ``None`` for a split node.
    """

    id: int
    path: tuple[int, ...]
    parent: int | None
    depth: int
    members: np.ndarray = field(repr=False)
    children: list[int] = field(default_factory=list)
    split_score: float = float("nan")
    criterion: dict[int, float] = field(default_factory=dict)
    coherence: float = float("nan")
    stop_reason: str | None = None

    @property
    def size(self) -> int:
        """Number of patterns."""
        return int(len(self.members))

    @property
    def is_leaf(self) -> bool:
        """True when the node has no children."""
        return not self.children


class Tree:
    """The nodes of a fitted divisive clustering, in breadth-first order."""

    def __init__(self, nodes: Sequence[Node], scan_shape: tuple[int, int]) -> None:
        self.nodes = list(nodes)
        self.scan_shape = scan_shape

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def __repr__(self) -> str:
        return "\n".join(self._lines())

    def _lines(self) -> list[str]:
        lines = []
        for node in self.nodes:
            note = f"split k={len(node.children)}, score {node.split_score:.3g}" if node.children else node.stop_reason
            lines.append(f"{'  ' * node.depth}node {node.id} {node.path}: {node.size} patterns; {note}")
        return lines

    @property
    def root(self) -> Node:
        """The node of all patterns."""
        return self.nodes[0]

    @property
    def leaves(self) -> list[Node]:
        """The leaf nodes."""
        return [node for node in self.nodes if node.is_leaf]

    @property
    def depth(self) -> int:
        """Depth of the deepest leaf."""
        return max(node.depth for node in self.nodes)

    def by_path(self, path: tuple[int, ...]) -> Node:
        """The node at ``path``."""
        for node in self.nodes:
            if node.path == tuple(path):
                return node
        raise KeyError(f"no node at path {tuple(path)}; the paths are {[n.path for n in self.nodes]}")

    def spec(self) -> dict[tuple[int, ...], int]:
        """``{path: k}`` of every split node: pass it as ``tree=`` to reproduce this tree."""
        return {node.path: len(node.children) for node in self.nodes if node.children}

    def label_map(self, depth: int | None = None) -> np.ndarray:
        """Node id of every probe position at ``depth`` (leaves above it keep their id); default: the leaves."""
        depth = self.depth if depth is None else depth
        labels = np.zeros(self.scan_shape[0] * self.scan_shape[1], dtype=np.int64)
        for node in self.nodes:
            if node.depth == depth or (node.is_leaf and node.depth < depth):
                labels[node.members] = node.id
        return labels.reshape(self.scan_shape)

    def siblings(self, node_id: int) -> list[int]:
        """Ids of the other children of the node's parent."""
        parent = self.nodes[node_id].parent
        return [] if parent is None else [c for c in self.nodes[parent].children if c != node_id]

    def to_dataset(self) -> xr.Dataset:
        """The node table on dim ``node``: parent (-1 for the root), depth, size, split score, coherence, stop reason."""
        nodes = self.nodes
        return xr.Dataset(
            {
                "parent": ("node", np.array([-1 if n.parent is None else n.parent for n in nodes])),
                "depth": ("node", np.array([n.depth for n in nodes])),
                "size": ("node", np.array([n.size for n in nodes])),
                "n_children": ("node", np.array([len(n.children) for n in nodes])),
                "split_score": ("node", np.array([n.split_score for n in nodes])),
                "coherence": ("node", np.array([n.coherence for n in nodes])),
                "path": ("node", np.array([".".join(map(str, n.path)) or "root" for n in nodes])),
                "stop_reason": ("node", np.array([n.stop_reason or "" for n in nodes])),
            },
            coords={"node": np.arange(len(nodes))},
        )


TreeSpec = Mapping[tuple[int, ...], int] | Sequence[int | Sequence[int]]


def normalise_spec(spec: TreeSpec) -> dict[tuple[int, ...], int] | list:
    """Check a manual tree: ``{path: k}``, or a list with one entry per level (see DivisiveClustering)."""
    if isinstance(spec, Mapping):
        out = {}
        for path, k in spec.items():
            path = tuple(int(i) for i in path)
            if not (isinstance(k, (int, np.integer)) and k >= 1):
                raise ValueError(f"tree[{path}] must be a positive integer k; got {k!r}")
            out[path] = int(k)
        return out
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
        raise TypeError(f"tree must be a dict {{path: k}} or a list per level, e.g. [2, (1, 2), (2, 4)]; got {spec!r}")
    levels = []
    for level in spec:
        if isinstance(level, (int, np.integer)):
            levels.append(int(level))
        else:
            levels.append(tuple(int(k) for k in level))
    return levels


def k_for(spec, node: Node, rank_in_level: int) -> int:
    """The k a manual ``spec`` gives ``node``, the ``rank_in_level``-th node of its depth (1: leaf)."""
    if isinstance(spec, dict):
        return spec.get(node.path, 1)
    if node.depth >= len(spec):
        return 1
    level = spec[node.depth]
    if isinstance(level, int):
        return level
    if rank_in_level >= len(level):
        raise ValueError(
            f"tree level {node.depth} gives k for {len(level)} nodes but has at least {rank_in_level + 1}; "
            "give one k per node at that level (1 for a leaf), or pass {path: k}"
        )
    return level[rank_in_level]
