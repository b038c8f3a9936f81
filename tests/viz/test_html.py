"""Static pages are self-contained: every script and style inline, nothing fetched."""

import re

import numpy as np
import panel  # noqa: F401  (importing panel is what injects its module shim into bokeh pages)
import pytest
from bokeh.layouts import row

from stemkit.viz import ExternalResourceError, image_figure, save_html
from stemkit.viz.html import standalone_html
from tests.conftest import make_cube


def test_page_has_no_external_references(tmp_path):
    cube = make_cube()
    layout = row(
        image_figure(cube.stem.virtual_image(outer=0.1), title="BF"),
        image_figure(cube.stem.max_pattern(), title="max", log=True),
    )
    path = save_html(layout, tmp_path / "page.html", title="test")
    html = path.read_text()
    assert "<script" in html and "Bokeh" in html
    assert not re.findall(r'<script[^>]*\bsrc=', html)
    assert not re.findall(r'<link[^>]*\bhref="(?!data:)', html)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_html(layout, path)


def test_external_reference_is_refused(monkeypatch):
    from bokeh.plotting import figure

    import stemkit.viz.html as html_module

    monkeypatch.setattr(html_module, "file_html", lambda *a, **k: '<html><script src="https://cdn.example/x.js"></script></html>')
    with pytest.raises(ExternalResourceError, match="cdn.example"):
        standalone_html(figure(), title="x")


def test_image_figure_axes_follow_coordinates():
    cube = make_cube()
    fig = image_figure(cube.stem.mean_pattern(), title="mean", log=True)
    assert fig.xaxis[0].axis_label == "kx (1/Å)" and fig.yaxis[0].axis_label == "ky (1/Å)"
    assert fig.y_range.start > fig.y_range.end, "y runs downwards (looking along the beam)"
    with pytest.raises(ValueError, match="2D"):
        image_figure(cube, title="x")
