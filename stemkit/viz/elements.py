"""holoviews images of real-space maps and diffraction patterns, with the axis conventions of DESIGN.md.

x runs to the right and y downwards (``invert_yaxis``), as in :func:`stemkit.viz.image_figure`:
looking along the beam, row 0 of an image is at the top, as on a camera.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import xarray as xr

from stemkit.viz.patterns import percentile_limits

SCAN_KDIMS = [hv.Dimension("scan_x", label="x", unit="nm"), hv.Dimension("scan_y", label="y", unit="nm")]
K_KDIMS = [hv.Dimension("kx", unit="1/Å"), hv.Dimension("ky", unit="1/Å")]
SIZE = 340


def scan_axes(data: xr.DataArray | xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) probe coordinates in nm."""
    return np.asarray(data["scan_x"].values, dtype=float), np.asarray(data["scan_y"].values, dtype=float)


def k_axes(data: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """The (kx, ky) detector coordinates in 1/Å."""
    return np.asarray(data["kx"].values, dtype=float), np.asarray(data["ky"].values, dtype=float)


def frame(x: np.ndarray, y: np.ndarray, width: int = SIZE) -> dict[str, int]:
    """``frame_width`` and ``frame_height`` that show pixels square (fixed sizes, as bokeh wants both)."""
    extent_x = abs(float(x[-1] - x[0])) * x.size / max(x.size - 1, 1) if x.size > 1 else 1.0
    extent_y = abs(float(y[-1] - y[0])) * y.size / max(y.size - 1, 1) if y.size > 1 else 1.0
    return {"frame_width": width, "frame_height": max(60, int(round(width * extent_y / extent_x)))}


def map_image(
    values: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    title: str,
    name: str,
    cmap: str = "gray",
    clim: tuple[float, float] | None = None,
    label: str = "value",
    symmetric: bool = False,
) -> hv.Image:
    """A real-space map ``values[iy, ix]`` on probe coordinates, y downwards.

    ``clim`` defaults to the 0.5–99.5 % percentiles; ``symmetric`` makes it ``±max|value|``.
    """
    values = np.asarray(values, dtype=float)
    if clim is None:
        finite = values[np.isfinite(values)]
        if symmetric:
            bound = float(np.max(np.abs(finite))) if finite.size else 1.0
            clim = (-bound or -1.0, bound or 1.0)
        else:
            clim = percentile_limits(values, (0.5, 99.5), log=False)
    return hv.Image((x, y, values), kdims=SCAN_KDIMS, vdims=[hv.Dimension("value", label=label)]).opts(
        title=title, cmap=cmap, clim=clim, colorbar=True, invert_yaxis=True, **frame(x, y),
        tools=["hover", "tap"], backend_opts={"plot.name": name}, toolbar="above",
    )


def rgb_map(rgb: np.ndarray, x: np.ndarray, y: np.ndarray, *, title: str, name: str) -> hv.RGB:
    """A real-space colour map ``rgb[iy, ix, channel]`` (floats 0..1), y downwards."""
    rgb = np.clip(np.nan_to_num(np.asarray(rgb, dtype=float), nan=0.0), 0.0, 1.0)
    return hv.RGB((x, y, rgb[..., 0], rgb[..., 1], rgb[..., 2]), kdims=SCAN_KDIMS).opts(
        title=title, invert_yaxis=True, **frame(x, y), tools=["tap"],
        backend_opts={"plot.name": name}, toolbar="above",
    )


def pattern_display(
    values: np.ndarray, *, log: bool = True, limits: tuple[float, float] = (0.5, 99.9),
    clim: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """What a pattern image shows: the values as float32 (half the bytes of float64 on the wire) and, with
    ``log``, those below the lower colour limit raised to it (no zeros on a log scale); and the colour limits
    (``clim``, or the ``limits`` percentiles)."""
    values = np.asarray(values, dtype=np.float32)
    clim = clim if clim is not None else percentile_limits(values, limits, log=log)
    return (np.clip(values, np.float32(clim[0]), None) if log else values), clim


def pattern_image(
    values: np.ndarray,
    kx: np.ndarray,
    ky: np.ndarray,
    *,
    title: str,
    name: str,
    log: bool = True,
    limits: tuple[float, float] = (0.5, 99.9),
    tools: tuple[str, ...] = ("hover",),
    cmap: str = "inferno",
    clim: tuple[float, float] | None = None,
) -> hv.Image:
    """A diffraction pattern ``values[iky, ikx]`` on k coordinates, ky downwards.

    With ``log``, values below the lower colour limit are shown at it (no zeros on a log scale).
    """
    shown, clim = pattern_display(values, log=log, limits=limits, clim=clim)
    return hv.Image((kx, ky, shown), kdims=K_KDIMS, vdims=[hv.Dimension("intensity")]).opts(
        title=title, cmap=cmap, clim=clim, logz=log, colorbar=True, invert_yaxis=True, **frame(kx, ky),
        tools=list(tools), backend_opts={"plot.name": name}, toolbar="above",
    )


def marker(x: float, y: float) -> hv.Points:
    """A cross marking the selected probe position."""
    return hv.Points([(x, y)], kdims=SCAN_KDIMS).opts(marker="cross", size=22, line_width=3, color="#00e5ff")
