"""Bokeh figures of real-space maps and diffraction patterns with physical axes."""

from __future__ import annotations

import numpy as np
import xarray as xr
from bokeh.models import ColorBar, LinearColorMapper, LogColorMapper
from bokeh.palettes import Greys256, Inferno256
from bokeh.plotting import figure

AXIS_LABELS = {"scan_x": "x (nm)", "scan_y": "y (nm)", "kx": "kx (1/Å)", "ky": "ky (1/Å)"}


def image_figure(image: xr.DataArray, *, title: str, log: bool = False, width: int = 360):
    """A bokeh figure of a 2D DataArray on its physical coordinates, with a colour bar.

    Parameters
    ----------
    image
        A computed 2D DataArray, dims ``(scan_y, scan_x)`` or ``(ky, kx)``.
    title
        Figure title.
    log
        Logarithmic colour scale (for diffraction patterns); non-positive values are
        shown at the smallest positive value.
    width
        Plot width in pixels; the height follows the aspect ratio of the data.

    Notes
    -----
    x runs to the right and y downwards, so that with z = x × y (DESIGN.md) the viewer
    looks along the beam and row 0 of an image is at the top, as on a camera.
    """
    if image.ndim != 2:
        raise ValueError(f"image_figure needs a 2D DataArray; got dims {image.dims}")
    dim_y, dim_x = image.dims
    y, x = image[dim_y].values, image[dim_x].values
    dy = float(y[1] - y[0]) if y.size > 1 else 1.0
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    values = np.asarray(image.values, dtype=float)
    mapper = _color_mapper(values, log)
    height = int(width * (y.size * dy) / (x.size * dx))
    fig = figure(
        title=title,
        width=width,
        height=max(120, height),
        x_range=(x[0] - dx / 2, x[-1] + dx / 2),
        y_range=(y[-1] + dy / 2, y[0] - dy / 2),  # y down: we look along the beam (+z into the screen)
        x_axis_label=AXIS_LABELS.get(dim_x, dim_x),
        y_axis_label=AXIS_LABELS.get(dim_y, dim_y),
        match_aspect=True,
        tools="pan,wheel_zoom,box_zoom,reset,hover,save",
        tooltips=[("x", "$x"), ("y", "$y"), ("value", "@image")],
    )
    fig.image(image=[values], x=x[0] - dx / 2, y=y[0] - dy / 2, dw=x.size * dx, dh=y.size * dy, color_mapper=mapper)
    fig.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
    return fig


def _color_mapper(values: np.ndarray, log: bool):
    finite = values[np.isfinite(values)]
    if log:
        positive = finite[finite > 0]
        low = float(positive.min()) if positive.size else 1e-3
        high = float(positive.max()) if positive.size else 1.0
        return LogColorMapper(palette=Inferno256, low=low, high=max(high, low * 10))
    low, high = (float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
    return LinearColorMapper(palette=Greys256, low=low, high=high if high > low else low + 1)
