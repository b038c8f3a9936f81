"""The base of every dashboard: a panel layout that shows itself in Jupyter and serves with ``panel serve``."""

from __future__ import annotations

import holoviews as hv
import panel as pn
import param


def load_extension() -> None:
    """Load holoviews' bokeh extension with BokehJS and panel's JavaScript and CSS inline.

    By default a notebook fetches them from cdn.bokeh.org and cdn.holoviz.org: with no network
    (a microscope PC, a cluster node) every view was an empty output in JupyterLab. Inline, the
    first load adds about 6 MB to the notebook's outputs. Outside Jupyter this changes nothing.
    """
    pn.config.inline = True
    hv.extension("bokeh", logo=False, inline=True)


class View(param.Parameterized):
    """A dashboard over stemkit data.

    Subclasses build their layout in :meth:`panel`. A view displays itself in a notebook
    (``explore(data)`` as the last line of a cell), and ``view.servable()`` in a script
    makes it the page of ``panel serve script.py``.
    """

    def panel(self) -> pn.viewable.Viewable:
        """The panel layout of this view."""
        raise NotImplementedError(f"{type(self).__name__} must define panel()")

    def __panel__(self) -> pn.viewable.Viewable:
        if getattr(self, "_layout", None) is None:
            self._layout = self.panel()
        return self._layout

    def servable(self, title: str | None = None) -> pn.viewable.Viewable:
        """Mark the layout as the page served by ``panel serve``; returns the layout."""
        return self.__panel__().servable(title=title)

    def _repr_mimebundle_(self, include=None, exclude=None):
        layout = self.__panel__()
        bundle = layout._repr_mimebundle_(include, exclude)
        acknowledge_on_open(layout)
        return bundle


def acknowledge_on_open(layout: pn.viewable.Viewable) -> None:
    """Make each Jupyter comm by which the page sends ``layout``'s events to the kernel acknowledge its opening.

    panel's page side sends a view's events (a tap) and changes over this comm and, once it has sent a
    message, holds back the next ones until the kernel acknowledges it; after 5 s without an answer it sends
    again only when a new event comes. ipykernel 7 handles comm messages at once even while a cell runs, but
    a comm's opening can wait behind that cell: with "Run All", a view displayed by one cell sent its first
    message while the next cell ran, the kernel dropped it (no such comm yet) and never answered, and a tap in
    the following 5 s stayed in the page until some later event. An acknowledgement sent when the comm opens
    releases what the page holds back. (A no-op outside Jupyter: ``layout`` then has no comms.)
    """
    for _, client_comm in getattr(layout, "_comms", {}).values():
        opened = getattr(client_comm, "_on_open", None)
        if getattr(opened, "acknowledges", False):
            continue

        def on_open(message, opened=opened, client_comm=client_comm) -> None:
            if opened is not None:
                opened(message)
            client_comm.send(metadata={"msg_type": "Ready", "content": ""})

        on_open.acknowledges = True
        client_comm._on_open = on_open
