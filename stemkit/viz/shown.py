"""The bokeh models of displayed views, updated in place when a tap selects another probe position.

A tap must show its pattern fast, also on a dask-backed cube: redrawing a holoviews DynamicMap
re-renders the whole plot and sends it again. Instead a view keeps (through holoviews hooks) the
bokeh models its plots were drawn with and changes only their data, title and colour range;
panel sends just those changes. Each kept object knows whether it is still displayed
(:meth:`alive`): a closed notebook output or served session drops out.

Taps reach Python straight from bokeh (:class:`ShownMap`), under the document's lock: a holoviews
stream waits for the next tick and then 10 ms more before it triggers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import holoviews as hv
import numpy as np
from bokeh.events import DoubleTap, MouseMove, Tap
from holoviews.core.util import dimension_sanitizer
from panel.io.document import unlocked


class ShownMap:
    """One displayed map figure, whose taps (and, once asked, pointer moves) go to ``handler``; a second tap
    soon after the first is a double tap to bokeh, and selects too."""

    def __init__(self, plot, handler: Callable) -> None:
        self.plot = plot
        self.figure = plot.state
        self.handler = handler
        self.following = False
        self._listen(Tap)
        self._listen(DoubleTap)

    def alive(self) -> bool:
        return self.figure.document is not None

    def follow(self) -> None:
        """Have the page send pointer moves over this figure too."""
        if not self.following and self.alive():
            self._listen(MouseMove)
            self.following = True
            self.plot.push()  # in Jupyter: the page learns of the new subscription over the comm

    def _listen(self, event: type) -> None:
        # on_event tells the page to send these events; a figure already in a document must also be
        # subscribed there, or the document does not pass them on to it (bokeh does so only when it attaches)
        self.figure.on_event(event, self.handler)
        if self.figure.document is not None:
            self.figure.document.callbacks.subscribe(event.event_name, self.figure)


class ShownImage:
    """One displayed image (a pattern): its values, title and colour range."""

    def __init__(self, plot) -> None:
        self.plot = plot
        self.figure = plot.handles["plot"]
        self.source = plot.handles["source"]
        self.color_mapper = plot.handles.get("color_mapper")

    def alive(self) -> bool:
        return self.figure.document is not None

    def update(self, values: np.ndarray, clim: tuple[float, float], title: str) -> None:
        self.source.data = dict(self.source.data, image=[values])
        self.figure.title.text = title
        if self.color_mapper is not None:
            self.color_mapper.update(low=float(clim[0]), high=float(clim[1]))


class ShownMarker:
    """The data source of one displayed position marker."""

    def __init__(self, plot, element: hv.Element) -> None:
        self.plot = plot
        self.source = plot.handles["source"]
        self.columns = [dimension_sanitizer(d.name) for d in element.kdims]

    def alive(self) -> bool:
        return self.source.document is not None

    def move(self, x: float, y: float) -> None:
        self.source.data = dict(self.source.data, **{self.columns[0]: [x], self.columns[1]: [y]})


class ShownPoints:
    """The data source of one displayed set of points (an overlay on a pattern), known by its label."""

    def __init__(self, plot, element: hv.Element) -> None:
        self.plot = plot
        self.label = element.label
        self.source = plot.handles["source"]

    def alive(self) -> bool:
        return self.source.document is not None

    def takes(self, element: hv.Element) -> bool:
        """Whether ``element`` can replace what is shown: same label, and a value for every column shown."""
        names = {dimension_sanitizer(d.name) for d in element.dimensions()}
        return element.label == self.label and set(self.source.data) <= names

    def show(self, element: hv.Element) -> None:
        self.source.data = {column: element.dimension_values(column) for column in self.source.data}


def still_shown(kept: Sequence) -> list:
    """The kept objects still displayed."""
    return [shown for shown in kept if shown.alive()]


def keep(kept: Sequence, new, same: Callable) -> list:
    """``kept`` with ``new`` in place of any that ``same(old, new)`` says it replaces. (Called from holoviews
    hooks, while a plot is drawn and before its models join a document: which are displayed is known only
    later, see :func:`still_shown`.)"""
    return [shown for shown in kept if not same(shown, new)] + [new]


def dispatch(change: Callable[[], None], plots: Sequence) -> None:
    """Make ``change`` to the kept bokeh models and send it to the page at once: served, also when the
    change comes from outside the document's lock; in Jupyter, over the comm of each of ``plots``."""
    with unlocked():
        change()
    for plot in plots:
        plot.push()
