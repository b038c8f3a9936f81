"""Views of stemkit data: linked dashboards for Jupyter and ``panel serve``, and self-contained HTML reports.

- :func:`explore`: a virtual image beside the pattern at the tapped probe position, detectors drawn on the pattern;
- :func:`orientation_view`, :func:`cluster_view`, :func:`strain_view`: result maps linked to the patterns;
- :func:`report`: one offline HTML file of maps and a downsampled cube, linked by a click.

Every view displays itself in JupyterLab and serves with ``panel serve`` (``view.servable()``).
"""

from stemkit.viz.cluster import ClusterView, cluster_view
from stemkit.viz.explore import Explorer, explore
from stemkit.viz.html import ExternalResourceError, save_html
from stemkit.viz.images import image_figure
from stemkit.viz.orientation import OrientationView, orientation_view
from stemkit.viz.report import report
from stemkit.viz.strain import StrainView, strain_view

__all__ = [
    "ClusterView",
    "Explorer",
    "ExternalResourceError",
    "OrientationView",
    "StrainView",
    "cluster_view",
    "explore",
    "image_figure",
    "orientation_view",
    "report",
    "save_html",
    "strain_view",
]
