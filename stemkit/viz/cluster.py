"""``cluster_view(clustering, data)``: the dendrogram of a divisive clustering, linked to maps and mean patterns.

Clicking a node of the dendrogram shows where its patterns are (the node's leaves, coloured,
on the scan; everything else grey), its mean pattern, and its mean minus that of its
sibling (the largest other child of its parent): what distinguishes it. Tapping the map
selects the leaf at that probe position. A new selection changes the displayed images in
place (:mod:`stemkit.viz.shown`).

The clustering is anything with this protocol (what :class:`stemkit.clustering.DivisiveClustering`
has after ``fit``):

- ``tree_``: nodes in breadth-first order, ``tree_.nodes[i]`` with ``id``, ``parent`` (None
  for the root), ``children`` (ids), ``depth``, ``size``, ``members`` (flat C-order indices
  over ``(scan_y, scan_x)``), and optionally ``split_score`` and ``stop_reason``;
- ``labels_``: the leaf id of every probe position on ``(scan_y, scan_x)``;
- ``means_``: the mean pattern of every node, a DataArray on ``(node, ky, kx)``.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.events import DoubleTap, Tap
from bokeh.palettes import Category10_10, Category20_20

from stemkit.viz.elements import SIZE, k_axes, map_image, pattern_display, pattern_image, scan_axes
from stemkit.viz.linked import check_same_scan
from stemkit.viz.patterns import check_cube, scan_index
from stemkit.viz.shown import ShownImage, ShownMap, dispatch, still_shown
from stemkit.viz.strain import symmetric_limit
from stemkit.viz.view import View, load_extension

load_extension()


def dendrogram_layout(nodes) -> dict[int, tuple[float, float]]:
    """(x, depth) of every node: leaves at 0, 1, 2, … in depth-first order, parents above the mean of their children."""
    by_id = {node.id: node for node in nodes}
    root = next(node for node in nodes if node.parent is None)
    position: dict[int, tuple[float, float]] = {}
    next_leaf = [0.0]

    def place(node) -> float:
        if not node.children:
            x = next_leaf[0]
            next_leaf[0] += 1
        else:
            x = float(np.mean([place(by_id[c]) for c in node.children]))
        position[node.id] = (x, float(node.depth))
        return x

    place(root)
    return position


class ClusterView(View):
    """A fitted clustering linked to its maps and mean patterns; see :func:`cluster_view`."""

    node = param.Integer(0, doc="Selected node id")
    log_scale = param.Boolean(True, doc="Logarithmic colour scale for the mean pattern")
    view_version = param.Integer(0, precedence=-1, doc="Incremented when the images must be drawn anew")

    def __init__(self, clustering, data: xr.DataArray, **params) -> None:
        super().__init__(**params)
        for attribute in ("tree_", "labels_", "means_"):
            if not hasattr(clustering, attribute):
                raise ValueError(f"cluster_view needs a fitted clustering with tree_, labels_ and means_ "
                                 f"(DivisiveClustering().fit(data)); {type(clustering).__name__} has no {attribute}")
        self.data = check_cube(data)
        check_same_scan(clustering.labels_, self.data, "clustering")
        self.nodes = list(clustering.tree_.nodes if hasattr(clustering.tree_, "nodes") else clustering.tree_)
        self.labels = np.asarray(clustering.labels_.values if hasattr(clustering.labels_, "values") else clustering.labels_)
        self.means = clustering.means_
        self._by_id = {n.id: n for n in self.nodes}
        self._layout_xy = dendrogram_layout(self.nodes)
        self._x, self._y = scan_axes(self.data)
        self._kx, self._ky = k_axes(self.means if "kx" in self.means.coords else self.data)
        base = _palette(len(self.nodes))
        self._palette = [base[i % len(base)] for i in range(max(n.id for n in self.nodes) + 1)]  # colour of node id
        self._maps: list[ShownMap] = []  # displayed bokeh models, updated in place on a new selection
        self._images: dict[str, list[ShownImage]] = {"map": [], "mean": [], "difference": []}

    # -- what is shown ------------------------------------------------------------------
    def sibling(self, node_id: int) -> int | None:
        """The largest other child of the node's parent (None for the root or an only child)."""
        parent = self._by_id[node_id].parent
        if parent is None:
            return None
        others = [c for c in self._by_id[parent].children if c != node_id]
        return max(others, key=lambda c: self._by_id[c].size) if others else None

    def node_map(self, node_id: int) -> np.ndarray:
        """Leaf ids of the node's patterns on the scan, NaN elsewhere."""
        flat = np.full(self.labels.size, np.nan)
        members = np.asarray(self._by_id[node_id].members)
        flat[members] = self.labels.ravel()[members]
        return flat.reshape(self.labels.shape)

    def difference(self, node_id: int) -> np.ndarray | None:
        """The node's mean pattern minus its sibling's (None without a sibling)."""
        sibling = self.sibling(node_id)
        if sibling is None:
            return None
        return np.asarray(self.means.sel(node=node_id).values - self.means.sel(node=sibling).values, dtype=float)

    def select(self, node_id: int) -> None:
        """Select node ``node_id``."""
        if node_id not in self._by_id:
            raise KeyError(f"no node {node_id}; the tree has nodes {sorted(self._by_id)}")
        self.node = int(node_id)

    # -- elements -----------------------------------------------------------------------
    def _dendrogram(self) -> hv.Overlay:
        xy = self._layout_xy
        segments = []
        for node in self.nodes:
            if node.parent is not None:
                (x0, y0), (x1, y1) = xy[node.parent], xy[node.id]
                segments += [(x0, y0, x1, y0), (x1, y0, x1, y1)]
        lines = hv.Segments(segments, kdims=["x0", "y0", "x1", "y1"]).opts(color="#555555", line_width=2)
        table = {
            "x": [xy[n.id][0] for n in self.nodes], "depth": [xy[n.id][1] for n in self.nodes],
            "node": [n.id for n in self.nodes], "size": [n.size for n in self.nodes],
            "radius": [8 + 14 * np.sqrt(n.size / self.nodes[0].size) for n in self.nodes],
            "colour": [self._palette[n.id] for n in self.nodes],
            "note": [_note(n) for n in self.nodes],
        }
        points = hv.Points(table, kdims=["x", "depth"], vdims=["node", "size", "radius", "colour", "note"]).opts(
            size="radius", color="colour", line_color="black", tools=["tap", "hover"], nonselection_alpha=0.5,
            hover_tooltips=[("node", "@node"), ("patterns", "@size"), ("", "@note")])
        hv.streams.Selection1D(source=points).add_subscriber(self._on_node_selected)
        labels = hv.Labels({"x": table["x"], "depth": table["depth"], "text": [str(n) for n in table["node"]]},
                           kdims=["x", "depth"], vdims=["text"]).opts(text_font_size="9pt", text_color="white")
        width = max(SIZE, 60 * sum(1 for n in self.nodes if not n.children))
        return (lines * points * labels).opts(
            title="Dendrogram (click a node)", invert_yaxis=True, frame_width=width, frame_height=260,
            xaxis=None, ylabel="depth", padding=0.15, backend_opts={"plot.name": "cluster-dendrogram"}, toolbar="above")

    def shown(self, view: str, node_id: int) -> tuple[np.ndarray, tuple[float, float], str]:
        """What image ``view`` ("map", "mean" or "difference") shows for node ``node_id``: values, colour limits
        and title."""
        node = self._by_id[node_id]
        if view == "map":
            return (self.node_map(node_id), (-0.5, len(self._palette) - 0.5),
                    f"Node {node.id}: {node.size} patterns, coloured by leaf")
        if view == "mean":
            values, clim = pattern_display(self.means.sel(node=node_id).values, log=self.log_scale)
            return values, clim, f"Mean pattern of node {node_id}"
        difference = self.difference(node_id)
        if difference is None:  # an empty image (one element type per DynamicMap), said so in the title
            return np.full((self._ky.size, self._kx.size), np.nan), (-1.0, 1.0), f"Node {node_id}: the root has no sibling"
        limit = symmetric_limit(difference)
        return difference, (-limit, limit), f"Node {node_id} minus sibling {self.sibling(node_id)}"

    @param.depends("view_version")
    def _map_element(self) -> hv.Image:
        values, clim, title = self.shown("map", self.node)
        return map_image(values, self._x, self._y, name="cluster-map", title=title, cmap=self._palette, clim=clim,
                         label="leaf").opts(colorbar=False, clipping_colors={"NaN": "#d0d0d0"},
                                            hooks=[self._keep("map"), self._listen_to_map])

    @param.depends("view_version", "log_scale")
    def _mean_element(self) -> hv.Image:
        values, clim, title = self.shown("mean", self.node)
        return pattern_image(values, self._kx, self._ky, title=title, name="cluster-mean", log=self.log_scale,
                             clim=clim).opts(hooks=[self._keep("mean")])

    @param.depends("view_version")
    def _difference_element(self) -> hv.Image:
        values, clim, title = self.shown("difference", self.node)
        return pattern_image(values, self._kx, self._ky, name="cluster-difference", log=False, cmap="RdBu_r",
                             clim=clim, title=title).opts(hooks=[self._keep("difference")])

    @param.depends("node", watch=True)
    def _show_node(self) -> None:
        """Show the selected node: in place in the displayed bokeh models, else by redrawing the DynamicMaps."""
        self._images = {view: still_shown(kept) for view, kept in self._images.items()}
        if not all(self._images.values()):
            self.view_version += 1
            return
        updates = [(kept, self.shown(view, self.node)) for view, kept in self._images.items()]

        def change() -> None:
            for kept, (values, clim, title) in updates:
                for shown in kept:
                    shown.update(values, clim, title)

        dispatch(change, [shown.plot for kept, _ in updates for shown in kept])

    def _keep(self, view: str):
        def hook(plot, element) -> None:
            shown = ShownImage(plot)
            self._images[view] = [s for s in self._images[view] if s.figure is not shown.figure] + [shown]

        return hook

    def _listen_to_map(self, plot, element) -> None:
        if not any(shown.figure is plot.state for shown in self._maps):
            self._maps = [*self._maps, ShownMap(plot, self._on_map_tap)]

    def _on_node_selected(self, index=None) -> None:
        if index:
            self.select(self.nodes[index[0]].id)

    def _on_map_tap(self, event: Tap | DoubleTap) -> None:
        if event.x is not None and event.y is not None:
            iy, ix = scan_index(self.data, event.x, event.y)
            self.select(int(self.labels[iy, ix]))

    def panel(self) -> pn.viewable.Viewable:
        label_map = hv.DynamicMap(self._map_element)
        return pn.Column(
            pn.pane.Markdown(f"### Divisive clustering — {len(self.nodes)} nodes, "
                             f"{sum(1 for n in self.nodes if not n.children)} leaves"),
            pn.Row(pn.widgets.Checkbox.from_param(self.param.log_scale, name="log scale (mean pattern)"),
                   pn.pane.Markdown("Click a node, or tap the map to select the leaf there.")),
            pn.Row(pn.pane.HoloViews(self._dendrogram(), linked_axes=False),
                   pn.pane.HoloViews(label_map, linked_axes=False)),
            pn.Row(pn.pane.HoloViews(hv.DynamicMap(self._mean_element), linked_axes=False),
                   pn.pane.HoloViews(hv.DynamicMap(self._difference_element), linked_axes=False)),
        )


def cluster_view(clustering, data: xr.DataArray) -> ClusterView:
    """A fitted clustering's dendrogram linked to the node maps and mean patterns.

    Parameters
    ----------
    clustering
        A fitted :class:`stemkit.clustering.DivisiveClustering`, or any object with ``tree_``,
        ``labels_`` and ``means_`` as described in :mod:`stemkit.viz.cluster`.
    data
        The cube that was clustered (for the probe coordinates; numpy or dask, never loaded).

    Returns
    -------
    ClusterView
        Clicking a node shows its label map, its mean pattern and the difference from its sibling.
    """
    return ClusterView(clustering, data)


def _palette(n: int) -> list[str]:
    return list(Category10_10) if n <= 10 else list(Category20_20)


def _note(node) -> str:
    if node.children:
        score = getattr(node, "split_score", float("nan"))
        return f"split in {len(node.children)}" + (f", score {score:.3g}" if np.isfinite(score) else "")
    return str(getattr(node, "stop_reason", "") or "leaf")
