"""Views of stemkit data: static self-contained HTML now, linked dashboards as they land."""

from stemkit.viz.html import ExternalResourceError, save_html
from stemkit.viz.images import image_figure

__all__ = ["ExternalResourceError", "image_figure", "save_html"]
