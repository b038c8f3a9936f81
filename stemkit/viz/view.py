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
        return self.__panel__()._repr_mimebundle_(include, exclude)
