"""Maps linked to a diffraction pattern: the common part of the result views.

A :class:`LinkedMaps` view shows result maps on ``(scan_y, scan_x)``; tapping any of them
selects that probe position, moves a marker on every map, and redraws the pattern there
with whatever a subclass overlays on it (:meth:`LinkedMaps.pattern_overlays`).
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from stemkit.viz.elements import k_axes, marker, pattern_image, scan_axes
from stemkit.viz.patterns import PatternReader, check_cube, scan_index
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

    def __init__(self, data: xr.DataArray, **params) -> None:
        super().__init__(**params)
        self.data = check_cube(data)
        self.reader = PatternReader(self.data)
        self._x, self._y = scan_axes(self.data)
        self._kx, self._ky = k_axes(self.data)
        self.position = (self.reader.scan_shape[0] // 2, self.reader.scan_shape[1] // 2)

    def select(self, iy: int, ix: int) -> None:
        """Select probe index (iy, ix)."""
        n_y, n_x = self.reader.scan_shape
        if not (0 <= iy < n_y and 0 <= ix < n_x):
            raise IndexError(f"probe index ({iy}, {ix}) is outside the scan of {n_y}×{n_x} positions")
        self.position = (int(iy), int(ix))

    def linked(self, element: hv.Element) -> hv.Overlay:
        """``element`` (a map on scan_x, scan_y) with the selection marker; a tap on it selects."""
        hv.streams.Tap(source=element).add_subscriber(self._on_tap)
        return element * hv.DynamicMap(self._marker_element)

    def pattern_overlays(self, iy: int, ix: int) -> list[hv.Element]:
        """Elements drawn over the pattern at (iy, ix), on (kx, ky); none by default."""
        return []

    def pattern_title(self, iy: int, ix: int) -> str:
        return f"Pattern at (y, x) = ({self._y[iy]:.4g}, {self._x[ix]:.4g}) nm [{iy}, {ix}]"

    def pattern_view(self, name: str = "pattern") -> hv.DynamicMap:
        """The pattern at the selected position with its overlays, redrawn on every selection."""

        @param.depends(self.param.position, self.param.log_scale)
        def element(position, log_scale):
            iy, ix = position
            image = pattern_image(self.reader.pattern(iy, ix), self._kx, self._ky, title=self.pattern_title(iy, ix),
                                  name=name, log=log_scale)
            return hv.Overlay([image, *self.pattern_overlays(iy, ix)])

        return hv.DynamicMap(element)

    @param.depends("position")
    def _marker_element(self) -> hv.Points:
        iy, ix = self.position
        return marker(self._x[ix], self._y[iy])

    def _on_tap(self, x=None, y=None) -> None:
        if x is not None and y is not None:
            self.select(*scan_index(self.data, x, y))

    def controls(self) -> pn.viewable.Viewable:
        return pn.Row(pn.widgets.Checkbox.from_param(self.param.log_scale, name="log scale (pattern)"),
                      pn.pane.Markdown("Tap any map to see the diffraction pattern there."))


def categorical_codes(names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of string labels and the sorted label list ("" shown as "(none)")."""
    labels = sorted(set(np.asarray(names).ravel().tolist()))
    codes = np.searchsorted(np.array(labels), np.asarray(names)).astype(float)
    return codes, [label if label != "" else "(none)" for label in labels]
