"""Maps linked to a diffraction pattern: the common part of the result views.

A :class:`LinkedMaps` view shows result maps on ``(scan_y, scan_x)``; tapping any of them
selects that probe position, moves a marker on every map, and shows the pattern there with
whatever a subclass overlays on it (:meth:`LinkedMaps.pattern_overlays`). A tap changes the
displayed bokeh models in place (:mod:`stemkit.viz.shown`); holoviews redraws the pattern
only when none is displayed yet or the overlays change shape.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.events import DoubleTap, Tap

from stemkit.viz.elements import k_axes, marker, pattern_display, pattern_image, scan_axes
from stemkit.viz.patterns import PatternReader, check_cube, scan_index
from stemkit.viz.shown import ShownImage, ShownMap, ShownMarker, ShownPoints, dispatch, keep, still_shown
from stemkit.viz.view import View, load_extension

load_extension()


def check_same_scan(result: xr.Dataset | xr.DataArray, data: xr.DataArray, what: str) -> None:
    """Refuse a result whose scan grid is not the data's (the maps would point at the wrong patterns)."""
    for dim in ("scan_y", "scan_x"):
        if dim not in result.dims:
            raise ValueError(f"the {what} has no {dim} dimension; expected maps on (scan_y, scan_x)")
        if result.sizes[dim] != data.sizes[dim]:
            raise ValueError(f"the {what} has {result.sizes[dim]} positions along {dim} but the data has "
                             f"{data.sizes[dim]}; pass the data the {what} was computed from")


class LinkedMaps(View):
    """Result maps beside the diffraction pattern at the tapped probe position.

    Parameters
    ----------
    data
        The canonical 4D cube the results were computed from (numpy or dask; read one chunk at a time).
    """

    position = param.Tuple((0, 0), length=2, doc="Selected probe index (iy, ix)")
    log_scale = param.Boolean(True, doc="Logarithmic colour scale for the pattern")
    pattern_version = param.Integer(0, precedence=-1, doc="Incremented when the pattern must be drawn anew")

    def __init__(self, data: xr.DataArray, **params) -> None:
        super().__init__(**params)
        self.data = check_cube(data)
        self.reader = PatternReader(self.data)
        self._x, self._y = scan_axes(self.data)
        self._kx, self._ky = k_axes(self.data)
        self._maps: list[ShownMap] = []  # displayed bokeh models, updated in place on a tap
        self._markers: list[ShownMarker] = []
        self._images: list[tuple[str, ShownImage]] = []  # (name of the view, its image)
        self._points: list[ShownPoints] = []
        self.position = (self.reader.scan_shape[0] // 2, self.reader.scan_shape[1] // 2)

    def select(self, iy: int, ix: int) -> None:
        """Select probe index (iy, ix)."""
        n_y, n_x = self.reader.scan_shape
        if not (0 <= iy < n_y and 0 <= ix < n_x):
            raise IndexError(f"probe index ({iy}, {ix}) is outside the scan of {n_y}×{n_x} positions")
        self.position = (int(iy), int(ix))

    def linked(self, element: hv.Element) -> hv.Overlay:
        """``element`` (a map on scan_x, scan_y) with the selection marker; a tap on it selects."""
        return element.opts(hooks=[self._listen_to_map]) * hv.DynamicMap(self._marker_element)

    def pattern_overlays(self, iy: int, ix: int) -> list[hv.Element]:
        """Elements drawn over the pattern at (iy, ix), on (kx, ky); none by default."""
        return []

    def pattern_title(self, iy: int, ix: int) -> str:
        return f"Pattern at (y, x) = ({self._y[iy]:.4g}, {self._x[ix]:.4g}) nm [{iy}, {ix}]"

    def image_at(self, name: str, iy: int, ix: int) -> tuple[np.ndarray, tuple[float, float], str] | None:
        """What the image view ``name`` shows at (iy, ix): values, colour limits and title (None: redraw it).
        The pattern views here; a subclass adds its own views."""
        values, clim = pattern_display(self.reader.pattern(iy, ix), log=self.log_scale)
        return values, clim, self.pattern_title(iy, ix)

    def pattern_view(self, name: str = "pattern") -> hv.DynamicMap:
        """The pattern at the selected position with its overlays (drawn anew only when :attr:`pattern_version`
        or the colour scale changes; a tap updates it in place)."""

        @param.depends(self.param.pattern_version, self.param.log_scale)
        def element(pattern_version, log_scale):
            iy, ix = self.position
            image = pattern_image(self.reader.pattern(iy, ix), self._kx, self._ky, title=self.pattern_title(iy, ix),
                                  name=name, log=log_scale).opts(hooks=[self.keep_image(name)])
            overlays = [overlay.opts(hooks=[self._keep_points]) for overlay in self.pattern_overlays(iy, ix)]
            return hv.Overlay([image, *overlays])

        return hv.DynamicMap(element)

    def keep_image(self, name: str):
        """A holoviews hook that remembers the bokeh models of image view ``name`` (see :meth:`image_at`)."""

        def hook(plot, element) -> None:
            shown = ShownImage(plot)
            self._images = [(n, s) for n, s in self._images if s.figure is not shown.figure]
            self._images.append((name, shown))

        return hook

    @param.depends("position", watch=True)
    def _show_position(self) -> None:
        """Show the selected position: in place in the displayed bokeh models (the fast path of a tap), else by
        redrawing the DynamicMaps."""
        iy, ix = self.position
        self._markers, self._points = still_shown(self._markers), still_shown(self._points)
        self._images = [(name, shown) for name, shown in self._images if shown.alive()]
        images = [(shown, self.image_at(name, iy, ix)) for name, shown in self._images]
        overlays = self.pattern_overlays(iy, ix) if self._points else []
        placed = [(shown, next((o for o in overlays if shown.takes(o)), None)) for shown in self._points]
        if not images or any(update is None for _, update in images) or any(o is None for _, o in placed):
            self.pattern_version += 1
            return

        def change() -> None:
            for shown, (values, clim, title) in images:
                shown.update(values, clim, title)
            for shown, overlay in placed:
                shown.show(overlay)
            for marker_ in self._markers:
                marker_.move(self._x[ix], self._y[iy])

        kept = [s for s, _ in images] + [s for s, _ in placed] + self._markers
        dispatch(change, [shown.plot for shown in kept])

    @param.depends("pattern_version")
    def _marker_element(self) -> hv.Points:
        iy, ix = self.position
        return marker(self._x[ix], self._y[iy]).opts(hooks=[self._keep_marker])

    def _keep_marker(self, plot, element) -> None:
        self._markers = keep(self._markers, ShownMarker(plot, element), lambda old, new: old.source is new.source)

    def _keep_points(self, plot, element) -> None:
        self._points = keep(self._points, ShownPoints(plot, element), lambda old, new: old.source is new.source)

    def _listen_to_map(self, plot, element) -> None:
        """holoviews hook: have bokeh call :meth:`_on_map_tap` on a tap on this map (:class:`ShownMap`)."""
        if not any(shown.figure is plot.state for shown in self._maps):
            self._maps = [*self._maps, ShownMap(plot, self._on_map_tap)]

    def _on_map_tap(self, event: Tap | DoubleTap) -> None:
        if event.x is not None and event.y is not None:
            self.select(*scan_index(self.data, event.x, event.y))

    def controls(self) -> pn.viewable.Viewable:
        return pn.Row(pn.widgets.Checkbox.from_param(self.param.log_scale, name="log scale (pattern)"),
                      pn.pane.Markdown("Tap any map to see the diffraction pattern there."))


def categorical_codes(names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of string labels and the sorted label list ("" shown as "(none)")."""
    labels = sorted(set(np.asarray(names).ravel().tolist()))
    codes = np.searchsorted(np.array(labels), np.asarray(names)).astype(float)
    return codes, [label if label != "" else "(none)" for label in labels]
