"""Views of stemkit data: linked dashboards for Jupyter and ``panel serve``, and self-contained HTML."""

from stemkit.viz.explore import Explorer, explore
from stemkit.viz.html import ExternalResourceError, save_html
from stemkit.viz.images import image_figure
from stemkit.viz.orientation import OrientationView, orientation_view
from stemkit.viz.report import report

__all__ = ["ExternalResourceError", "Explorer", "explore", "image_figure",
    "orientation_view", "OrientationView", "report", "save_html"]
