"""``explore(data)``: a virtual image linked to the diffraction pattern at the selected probe position.

Tap (or, with "follow pointer", hover over) the real-space image to see the pattern there;
drag a box on the pattern to draw a virtual detector (circle, annulus or box) and the image
is recomputed, chunk by chunk with a progress bar on dask-backed data. The cube is never
loaded whole: a tap reads the one chunk of whole patterns that holds the position
(:class:`~stemkit.viz.patterns.PatternReader`), and a virtual image streams over the chunks.
"""

from __future__ import annotations

import asyncio
import time

import dask
import holoviews as hv
from bokeh.events import DoubleTap, MouseMove, Tap
import numpy as np
import panel as pn
import param
import xarray as xr

from stemkit.preprocess.centering import radius_px_of
from stemkit.preprocess.detectors import Detector, named_detector
from stemkit.viz.drawing import SHAPES, describe, detector_from_box, outline
from stemkit.viz.elements import k_axes, map_image, marker, pattern_display, pattern_image, scan_axes
from stemkit.viz.patterns import (
    PatternReader,
    check_cube,
    detector_weights,
    percentile_limits,
    scan_index,
    virtual_image_blocks,
)
from stemkit.viz.shown import ShownImage, ShownMap, ShownMarker, dispatch, keep, still_shown
from stemkit.viz.view import View, load_extension

load_extension()


class Explorer(View):
    """A virtual image beside the diffraction pattern at the selected probe position.

    Parameters
    ----------
    data
        Canonical 4D DataArray (numpy or dask; a dask cube is never loaded whole), or a
        Dataset holding one as ``intensity``.
    detector
        The first virtual detector: ``"BF"``, ``"ADF"`` or a detector object
        (:class:`~stemkit.preprocess.Circle`, ``Annulus``, ``Rectangle``, ``Mask``).
    beam_radius
        Direct-beam radius in 1/Å for BF and ADF; measured from the patterns of the first
        chunk when not given.
    """

    detector = param.Selector(objects=["BF", "ADF", "drawn"], default="BF", doc="Virtual detector of the image")
    shape = param.Selector(objects=list(SHAPES), default="circle", doc="Shape drawn by dragging a box on the pattern")
    annulus_ratio = param.Number(0.5, bounds=(0.05, 0.95), doc="Inner / outer radius of a drawn annulus")
    log_scale = param.Boolean(True, doc="Logarithmic colour scale for the pattern")
    pattern_limits = param.Range((0.5, 99.9), bounds=(0.0, 100.0), doc="Pattern colour limits (percentiles)")
    image_limits = param.Range((0.5, 99.5), bounds=(0.0, 100.0), doc="Image colour limits (percentiles)")
    follow_pointer = param.Boolean(False, doc="Show the pattern under the pointer, not only where tapped")
    position = param.Tuple((0, 0), length=2, doc="Selected probe index (iy, ix)")
    progress = param.Integer(100, bounds=(0, 100), doc="Per cent of the virtual image computed")
    status = param.String("")
    image_version = param.Integer(0, precedence=-1, doc="Incremented whenever the image values change")
    pattern_version = param.Integer(0, precedence=-1, doc="Incremented when the pattern must be drawn anew")

    def __init__(self, data: xr.DataArray, *, detector: str | Detector = "BF", beam_radius: float | None = None,
                 **params) -> None:
        super().__init__(**params)
        self.data = check_cube(data)
        self.reader = PatternReader(self.data)
        self._x, self._y = scan_axes(self.data)
        self._kx, self._ky = k_axes(self.data)
        self._beam_radius = beam_radius
        self._drawn: Detector | None = None
        self._image = np.full(self.reader.scan_shape, np.nan, dtype=np.float32)
        self._generation = 0
        self._shown: list[ShownImage] = []  # bokeh models of the displayed views, updated in place on a tap
        self._markers: list[ShownMarker] = []
        self._maps: list[ShownMap] = []  # displayed map figures: their taps (and pointer) reach _on_map_event
        self._selected: tuple[tuple[int, int], np.ndarray | None] = ((-1, -1), None)
        self.position = (self.reader.scan_shape[0] // 2, self.reader.scan_shape[1] // 2)
        self.last_read_ms = float("nan")
        if isinstance(detector, str):
            self.detector = detector.upper()
        else:
            self._drawn, self.detector = detector, "drawn"
        self.param.watch(self._detector_changed, ["detector"])
        self._start_recompute()

    # -- state --------------------------------------------------------------------------
    @property
    def image(self) -> xr.DataArray:
        """The current virtual image (NaN where not yet computed)."""
        return xr.DataArray(self._image.copy(), dims=("scan_y", "scan_x"),
                            coords={"scan_y": self.data.scan_y, "scan_x": self.data.scan_x}, name="virtual_image")

    def current_detector(self) -> Detector:
        """The detector the image shows."""
        if self.detector == "drawn":
            if self._drawn is None:
                raise ValueError("no detector has been drawn yet: drag a box on the pattern")
            return self._drawn
        if self._beam_radius is None:
            self._beam_radius = self._measure_beam_radius()
        k_max = float(min(np.abs(self._kx).max(), np.abs(self._ky).max()))
        return named_detector(self.detector.lower(), self._beam_radius, k_max)

    def select(self, iy: int, ix: int) -> np.ndarray:
        """Select probe index (iy, ix): read its pattern (one chunk at most) and move the marker."""
        start = time.perf_counter()
        pattern = self.reader.pattern(int(iy), int(ix))
        self.last_read_ms = 1000 * (time.perf_counter() - start)
        self._selected = ((int(iy), int(ix)), pattern)
        if self.position == (int(iy), int(ix)):
            self._show_position()
        self.position = (int(iy), int(ix))  # the watcher shows it
        return pattern

    @param.depends("position", watch=True)
    def _show_position(self) -> None:
        """Show the pattern at :attr:`position`: in place in the displayed bokeh models when there are some
        (the fast path of a tap: no re-render), else by redrawing the DynamicMaps."""
        iy, ix = self.position
        where, pattern = self._selected
        if where != (iy, ix):
            pattern = self.reader.pattern(iy, ix)
        self._shown, self._markers = still_shown(self._shown), still_shown(self._markers)
        if not self._shown:
            self.pattern_version += 1
            return
        values, clim = pattern_display(pattern, log=self.log_scale, limits=self.pattern_limits)
        title = self._pattern_title(iy, ix)

        def change() -> None:
            for shown in self._shown:
                shown.update(values, clim, title)
            for marker_ in self._markers:
                marker_.move(self._x[ix], self._y[iy])

        dispatch(change, [kept.plot for kept in [*self._shown, *self._markers]])

    def _pattern_title(self, iy: int, ix: int) -> str:
        return f"Pattern at (y, x) = ({self._y[iy]:.4g}, {self._x[ix]:.4g}) nm [{iy}, {ix}]"

    def draw(self, bounds: tuple[float, float, float, float], shape: str | None = None) -> Detector:
        """Use the detector a box ``(kx0, ky0, kx1, ky1)`` in 1/Å defines (see :mod:`stemkit.viz.drawing`)."""
        detector = detector_from_box(shape or self.shape, bounds, ratio=self.annulus_ratio)
        detector_weights(self.data, detector)  # refuse a detector that covers no pixel before switching
        self._drawn = detector
        if self.detector == "drawn":
            self._start_recompute()
        else:
            self.detector = "drawn"
        return detector

    # -- computing the image ------------------------------------------------------------
    def recompute(self) -> None:
        """Compute the virtual image now, blocking until done (scripts and tests)."""
        self._generation += 1
        weights = self._weights_or_status()
        if weights is None:
            return
        self.progress = 0
        steps = list(virtual_image_blocks(self.data, weights))
        for done, (slices, pieces) in enumerate(steps, start=1):
            self._store(slices, dask.compute(*pieces))
            self.progress = int(100 * done / len(steps))
        self._finish()

    async def recompute_async(self) -> None:
        """Compute the virtual image step by step off the event loop, showing progress; a newer
        detector stops an older computation."""
        self._generation += 1
        generation = self._generation
        weights = self._weights_or_status()
        if weights is None:
            return
        self.progress = 0
        loop = asyncio.get_running_loop()
        steps = virtual_image_blocks(self.data, weights)
        total = _n_steps(self.data)
        for done, (slices, pieces) in enumerate(steps, start=1):
            values = await loop.run_in_executor(None, dask.compute, *pieces)
            if generation != self._generation:
                return
            self._store(slices, values)
            self.progress = int(100 * done / total)
            self.image_version += 1
        self._finish()

    def _weights_or_status(self) -> np.ndarray | None:
        try:
            detector = self.current_detector()
            weights = detector_weights(self.data, detector)
        except ValueError as error:
            self.status = f"⚠ {error}"
            return None
        self._image[:] = np.nan
        self.status = f"computing the {self.detector} image ({describe(detector)})…"
        return weights

    def _store(self, slices, values) -> None:
        for (sy, sx), value in zip(slices, values):
            self._image[sy, sx] = value

    def _finish(self) -> None:
        self.progress = 100
        self.status = f"{self.detector}: {describe(self.current_detector())}"
        self.image_version += 1

    def _start_recompute(self) -> None:
        if not self.reader.lazy or not _has_event_loop():
            self.recompute()
            return
        param.parameterized.async_executor(self.recompute_async)

    def _detector_changed(self, event) -> None:
        self._start_recompute()

    def _measure_beam_radius(self) -> float:
        """Direct-beam radius (1/Å) of the mean of the patterns in the first chunk (one chunk read)."""
        mean = self.reader.chunk_mean(0, 0)
        return radius_px_of(mean) * abs(float(self._kx[1] - self._kx[0]))

    # -- the view -----------------------------------------------------------------------
    @param.depends("image_version", "image_limits")
    def _image_element(self) -> hv.Image:
        clim = percentile_limits(self._image, self.image_limits, log=False)
        return map_image(self._image, self._x, self._y, title=f"Virtual image ({self.detector})",
                         name="explore-map", clim=clim, label="signal").opts(hooks=[self._listen_to_map])

    @param.depends("pattern_version")
    def _marker_element(self) -> hv.Points:
        iy, ix = self.position
        return marker(self._x[ix], self._y[iy]).opts(hooks=[self._keep_marker])

    @param.depends("pattern_version", "log_scale", "pattern_limits")
    def _pattern_element(self) -> hv.Image:
        iy, ix = self.position
        pattern = self.reader.pattern(iy, ix)
        return pattern_image(pattern, self._kx, self._ky, title=self._pattern_title(iy, ix), name="explore-pattern",
                             log=self.log_scale, limits=self.pattern_limits, tools=("hover", "box_select")).opts(
            active_tools=["box_select"], hooks=[self._keep_pattern])

    def _keep_pattern(self, plot, element) -> None:
        """holoviews hook: remember the pattern's bokeh models so that a tap can update them in place."""
        self._shown = keep(self._shown, ShownImage(plot), lambda old, new: old.figure is new.figure)

    def _listen_to_map(self, plot, element) -> None:
        """holoviews hook: have bokeh call :meth:`_on_map_event` on a tap on the map figure (and on pointer moves
        while :attr:`follow_pointer` is on), straight from the event (:class:`~stemkit.viz.shown.ShownMap`)."""
        if not any(shown.figure is plot.state for shown in self._maps):
            self._maps = [*self._maps, ShownMap(plot, self._on_map_event)]
        self._follow_pointer()

    @param.depends("follow_pointer", watch=True)
    def _follow_pointer(self) -> None:
        """Have the page send pointer moves over the maps from when "follow the pointer" is first ticked (until
        then none are sent: a tap needs none)."""
        if self.follow_pointer:
            for shown in self._maps:
                shown.follow()

    def _keep_marker(self, plot, element) -> None:
        """holoviews hook: remember the marker's data source (moved in place on a tap)."""
        self._markers = keep(self._markers, ShownMarker(plot, element), lambda old, new: old.source is new.source)

    @param.depends("detector", "image_version")
    def _outline_element(self) -> hv.Path:
        try:
            return outline(self.current_detector())
        except ValueError:
            return outline(None)

    def _on_map_event(self, event: Tap | DoubleTap | MouseMove) -> None:
        if isinstance(event, MouseMove) and not self.follow_pointer:
            return
        if event.x is not None and event.y is not None:
            self.select(*scan_index(self.data, event.x, event.y))

    def _on_bounds(self, bounds=None) -> None:
        if bounds is None:
            return
        try:
            self.draw(bounds)
        except ValueError as error:
            self.status = f"⚠ {error}"

    def panel(self) -> pn.viewable.Viewable:
        image = hv.DynamicMap(self._image_element)
        pattern = hv.DynamicMap(self._pattern_element)
        hv.streams.BoundsXY(source=pattern).add_subscriber(self._on_bounds)
        plots = pn.Row(
            pn.pane.HoloViews(image * hv.DynamicMap(self._marker_element), linked_axes=False),
            pn.pane.HoloViews(pattern * hv.DynamicMap(self._outline_element), linked_axes=False),
        )
        controls = pn.Column(
            pn.widgets.RadioButtonGroup.from_param(self.param.detector, name="Detector"),
            pn.widgets.RadioButtonGroup.from_param(self.param.shape, name="Draw"),
            pn.widgets.FloatSlider.from_param(self.param.annulus_ratio),
            pn.widgets.Checkbox.from_param(self.param.log_scale, name="log scale (pattern)"),
            pn.widgets.RangeSlider.from_param(self.param.pattern_limits, step=0.1),
            pn.widgets.RangeSlider.from_param(self.param.image_limits, step=0.1),
            pn.widgets.Checkbox.from_param(self.param.follow_pointer, name="follow the pointer"),
            pn.pane.Markdown("Tap the image to see a pattern; drag a box on the pattern to draw a detector.",
                             width=260),
            width=280,
        )
        progress = pn.indicators.Progress.from_param(self.param.progress, max=100, width=300,
                                                     bar_color="primary", name="virtual image")
        status = pn.pane.Str(self.param.status, styles={"font-size": "12px"})
        return pn.Column(pn.pane.Markdown(f"### {_title(self.data)}"), pn.Row(controls, plots),
                         pn.Row(progress, status))


def explore(data: xr.DataArray, *, detector: str | Detector = "BF", beam_radius: float | None = None) -> Explorer:
    """Explore a 4D-STEM cube: a virtual image linked to the pattern at the tapped probe position.

    Parameters
    ----------
    data
        Canonical 4D DataArray, numpy- or dask-backed (a dask cube is never loaded whole).
    detector
        ``"BF"``, ``"ADF"`` or a detector object for the first image.
    beam_radius
        Direct-beam radius in 1/Å for BF/ADF (measured from the first chunk if not given).

    Returns
    -------
    Explorer
        Displays itself in Jupyter; ``explore(data).servable()`` in a script serves it with
        ``panel serve``.

    Examples
    --------
    >>> import stemkit
    >>> from stemkit.viz import explore
    >>> data = stemkit.load("scan.zarr", lazy=True)      # doctest: +SKIP
    >>> explore(data)                                      # doctest: +SKIP
    """
    return Explorer(data, detector=detector, beam_radius=beam_radius)


def _title(data: xr.DataArray) -> str:
    n_y, n_x, n_ky, n_kx = data.shape
    backing = "dask, read chunk by chunk" if hasattr(data.data, "dask") else "in memory"
    source = data.attrs.get("source", "")
    return f"{n_y}×{n_x} probe positions, {n_ky}×{n_kx} detector pixels ({backing}){' — ' + source if source else ''}"


def _n_steps(data: xr.DataArray) -> int:
    if not hasattr(data.data, "dask"):
        return 1
    n_blocks = len(data.chunks[0]) * len(data.chunks[1])
    return -(-n_blocks // 4)


def _has_event_loop() -> bool:
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
