"""``report(items, path)``: one self-contained HTML file of maps linked to a downsampled cube.

The page needs no Python and no network: every script is inline (:func:`stemkit.viz.html.standalone_html`),
the cube travels inside the page as one float32 array, and a click on any map copies the
pattern of the nearest probe position into the pattern figure with a bokeh ``CustomJS``
callback. The cube is binned (detector first, down to ``min_pattern`` pixels, then the scan)
until it fits ``max_cube_mb``; the page states its own size and how the cube was binned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJS,
    Div,
    FixedTicker,
    LinearColorMapper,
    LogColorMapper,
)
from bokeh.palettes import Category10_10, Inferno256, turbo
from bokeh.plotting import figure

from stemkit.data.contract import SCAN_DIMS
from stemkit.viz.html import standalone_html
from stemkit.viz.images import AXIS_LABELS, image_figure
from stemkit.viz.patterns import check_cube, percentile_limits

MAP_WIDTH = 330
TAP_JS = """
const x = cb_obj.x, y = cb_obj.y;
const nearest = (axis, v) => {
  let best = 0, distance = Infinity;
  for (let i = 0; i < axis.length; i++) {
    const d = Math.abs(axis[i] - v);
    if (d < distance) { distance = d; best = i; }
  }
  return best;
};
const iy = nearest(scan_y, y), ix = nearest(scan_x, x);
const n_k = n_ky * n_kx;
const start = (iy * n_x + ix) * n_k;
const image = pattern.data.image[0];
const flat = cube.data.cube[0];  // a bokeh NDArray: view its buffer directly (its subarray ignores the bounds)
image.set(new Float32Array(flat.buffer, flat.byteOffset + 4 * start, n_k));
pattern.data = Object.assign({}, pattern.data, {image: [image]});
marker.data = {x: [scan_x[ix]], y: [scan_y[iy]]};
title.text = `Pattern at (y, x) = (${scan_y[iy].toFixed(3)}, ${scan_x[ix].toFixed(3)}) nm [${iy}, ${ix}]`;
document.body.dataset.stemkitProbe = `${iy},${ix}`;
"""


@dataclass(frozen=True)
class Binning:
    """How the cube was reduced for the page: integer factors over the scan and the detector."""

    scan: int
    k: int

    def shape(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        n_y, n_x, n_ky, n_kx = shape
        return n_y // self.scan, n_x // self.scan, n_ky // self.k, n_kx // self.k


def choose_binning(shape: tuple[int, int, int, int], max_bytes: float, *, min_pattern: int = 64,
                   itemsize: int = 4) -> Binning:
    """The smallest binning that brings the cube under ``max_bytes``.

    The detector is binned by factors of 2 while the patterns stay at least ``min_pattern``
    pixels wide; then the scan is binned by the smallest integer that fits.
    """
    binning = Binning(1, 1)

    def size(b: Binning) -> int:
        return int(np.prod(b.shape(shape))) * itemsize

    while size(binning) > max_bytes and min(shape[2:]) // (2 * binning.k) >= min_pattern:
        binning = Binning(binning.scan, 2 * binning.k)
    while size(binning) > max_bytes:
        binning = Binning(binning.scan + 1, binning.k)
        if min(binning.shape(shape)[:2]) < 1:
            raise ValueError(f"a cube of shape {shape} cannot fit {max_bytes / 1e6:.3g} MB even binned to one "
                             f"probe position; raise max_cube_mb")
    return binning


def report(
    items: Mapping[str, xr.DataArray | xr.Dataset] | Sequence[xr.DataArray | xr.Dataset],
    path: str | os.PathLike,
    *,
    title: str = "stemkit report",
    max_cube_mb: float = 16.0,
    min_pattern: int = 64,
    overwrite: bool = False,
    notes: Sequence[str] = (),
    unlinked: Mapping[str, xr.DataArray] | None = None,
) -> Path:
    """Write maps and a downsampled cube as one HTML file where a click on a map shows the pattern there.

    Parameters
    ----------
    items
        The cube (one 4D DataArray, dims ``(scan_y, scan_x, ky, kx)``) and the maps: 2D
        DataArrays on ``(scan_y, scan_x)`` (numbers, booleans or names such as phases),
        RGB maps ``(scan_y, scan_x, rgb)`` with values in 0..1, or Datasets, whose variables
        of those shapes become maps (others, e.g. quaternions, are listed as left out). A
        mapping gives the titles; in a sequence, each map's name is its title.
    path
        Destination ``.html`` file.
    title
        Page title and heading.
    max_cube_mb
        Upper bound on the embedded cube (float32), in MB (10⁶ bytes). The page itself adds
        about 2 MB of inline bokeh JavaScript and base64 encoding adds a third to the cube.
    min_pattern
        Patterns are binned on the detector only while they stay at least this many pixels wide.
    overwrite
        Replace an existing file.
    notes
        Lines listed under the title (e.g. the figures of the analysis).
    unlinked
        Maps of other specimens or scans (2D DataArrays), shown in a section of their own without
        the link to the cube.

    Returns
    -------
    pathlib.Path
        The file written; its size is stated on the page.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    cube, maps, left_out = _sort_items(items)
    binning = choose_binning(cube.shape, max_cube_mb * 1e6, min_pattern=min_pattern)
    small = cube.stem.bin(scan=binning.scan, k=binning.k, reduce="mean").astype(np.float32).compute()
    values = np.ascontiguousarray(small.values, dtype=np.float32)
    floor, high = percentile_limits(values, (1.0, 99.95), log=True)
    values = np.maximum(values, floor)  # a logarithmic colour scale needs positive values

    marker = ColumnDataSource(data={"x": [float(small.scan_x[0])], "y": [float(small.scan_y[0])]})
    pattern_fig, pattern_source = _pattern_figure(small, values[0, 0], (floor, high))
    cube_source = ColumnDataSource(data={"cube": [values.ravel()]})
    callback = CustomJS(
        args={"cube": cube_source, "pattern": pattern_source, "marker": marker, "title": pattern_fig.title,
              "scan_y": small.scan_y.values.tolist(), "scan_x": small.scan_x.values.tolist(),
              "n_x": values.shape[1], "n_ky": values.shape[2], "n_kx": values.shape[3]},
        code=TAP_JS,
    )
    map_figures = [_map_figure(name, image, marker, callback) for name, image in maps.items()]
    cube_note = (f"cube {'×'.join(map(str, cube.shape))} binned ×{binning.scan} over the scan and ×{binning.k} on "
                 f"the detector to {'×'.join(map(str, values.shape))} float32 ({values.nbytes / 1e6:.2f} MB, "
                 f"bound {max_cube_mb:g} MB)")
    notes = [*notes, cube_note] + ([f"left out: {', '.join(left_out)}"] if left_out else [])
    header = Div(text="")
    layout = column(header, row(gridplot(map_figures, ncols=2, toolbar_location="right"), pattern_fig))
    if unlinked:
        figures = [image_figure(image.compute().astype(float), title=name, width=MAP_WIDTH)
                   for name, image in unlinked.items()]
        layout.children += [Div(text="<h3 style='margin:8px 0 0 0'>Other maps (not linked to the cube above)</h3>"),
                            gridplot(figures, ncols=4, toolbar_location="right")]

    def page() -> str:
        return standalone_html(layout, title=title)

    header.text = _header(title, notes, size_mb=0.0)
    size_mb = len(page().encode("utf-8")) / 1e6
    header.text = _header(title, notes, size_mb=size_mb)
    html = page()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _header(title: str, notes: list[str], *, size_mb: float) -> str:
    items = "".join(f"<li>{note}</li>" for note in notes)
    return (f"<h2 style='margin:0'>{title}</h2><p style='margin:4px 0'>Click any map to see the diffraction "
            f"pattern there (works offline, no Python needed). This file: {size_mb:.1f} MB.</p>"
            f"<ul style='margin:0;font-size:12px'>{items}</ul>")


def _sort_items(items) -> tuple[xr.DataArray, dict[str, xr.DataArray], list[str]]:
    named = items.items() if isinstance(items, Mapping) else [(getattr(i, "name", None), i) for i in items]
    cubes, maps, left_out = [], {}, []
    for name, item in named:
        if isinstance(item, xr.Dataset):
            for var, array in item.data_vars.items():
                label = f"{name}: {var}" if isinstance(items, Mapping) else str(var)
                if _is_map(array):
                    maps[label] = array
                elif array.dims == ("scan_y", "scan_x", "ky", "kx"):
                    cubes.append(array)
                else:
                    left_out.append(f"{label} {tuple(array.dims)}")
        elif isinstance(item, xr.DataArray) and item.ndim == 4:
            cubes.append(check_cube(item))
        elif isinstance(item, xr.DataArray) and _is_map(item):
            maps[str(name if name is not None else f"map {len(maps) + 1}")] = item
        else:
            dims = getattr(item, "dims", type(item).__name__)
            raise ValueError(f"report takes the 4D cube and maps on (scan_y, scan_x) or (scan_y, scan_x, rgb); "
                             f"got {name!r} with dims {dims}")
    if len(cubes) != 1:
        raise ValueError(f"report needs exactly one 4D cube (scan_y, scan_x, ky, kx) among the items to link the maps "
                         f"to patterns; got {len(cubes)}")
    if not maps:
        raise ValueError("report needs at least one map on (scan_y, scan_x), e.g. a virtual image")
    return cubes[0], maps, left_out


def _is_map(array: xr.DataArray) -> bool:
    return array.dims == SCAN_DIMS or (array.dims == (*SCAN_DIMS, "rgb") and array.sizes["rgb"] == 3)


def _pattern_figure(small: xr.DataArray, first: np.ndarray, clim: tuple[float, float]):
    fig = image_figure(small.isel(scan_y=0, scan_x=0), title="Pattern at (y, x) = (0, 0) [0, 0]", log=True, width=420)
    fig.name = "report-pattern"
    renderer = next(r for r in fig.renderers if "image" in r.data_source.data)
    renderer.data_source.data["image"] = [first.copy()]
    mapper = LogColorMapper(palette=Inferno256, low=clim[0], high=clim[1])
    renderer.glyph.color_mapper = mapper
    for bar in (r for r in fig.right if isinstance(r, ColorBar)):
        bar.color_mapper = mapper
    return fig, renderer.data_source


def _map_figure(name: str, image: xr.DataArray, marker: ColumnDataSource, callback: CustomJS):
    image = image.compute()
    if image.dims == (*SCAN_DIMS, "rgb"):
        fig = _rgb_figure(image, name)
    elif image.dtype.kind in "UOS":
        fig = _categorical_figure(image, name)
    else:
        fig = image_figure(image.astype(float), title=name, width=MAP_WIDTH)
    fig.name = f"report-map-{name}"
    fig.scatter("x", "y", source=marker, marker="cross", size=20, line_width=3, color="#00e5ff")
    fig.js_on_event("tap", callback)
    return fig


def _scan_figure(image: xr.DataArray, title: str):
    y, x = image.scan_y.values, image.scan_x.values
    dy = float(y[1] - y[0]) if y.size > 1 else 1.0
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    fig = figure(title=title, width=MAP_WIDTH, height=max(120, int(MAP_WIDTH * y.size * dy / (x.size * dx))),
                 x_range=(x[0] - dx / 2, x[-1] + dx / 2), y_range=(y[-1] + dy / 2, y[0] - dy / 2),
                 x_axis_label=AXIS_LABELS["scan_x"], y_axis_label=AXIS_LABELS["scan_y"], match_aspect=True,
                 tools="pan,wheel_zoom,box_zoom,reset,save")
    return fig, dict(x=x[0] - dx / 2, y=y[0] - dy / 2, dw=x.size * dx, dh=y.size * dy)


def _rgb_figure(image: xr.DataArray, title: str):
    fig, placement = _scan_figure(image, title)
    rgb = np.clip(np.nan_to_num(image.transpose(*SCAN_DIMS, "rgb").values.astype(float)), 0, 1)
    rgba = np.empty(rgb.shape[:2], dtype=np.uint32)
    view = rgba.view(np.uint8).reshape(*rgb.shape[:2], 4)
    view[..., :3] = np.rint(255 * rgb).astype(np.uint8)
    view[..., 3] = 255
    fig.image_rgba(image=[rgba], **placement)
    return fig


def _categorical_figure(image: xr.DataArray, title: str):
    fig, placement = _scan_figure(image, title)
    names = sorted(set(image.values.ravel().tolist()))
    codes = np.searchsorted(np.array(names), image.values).astype(float)
    palette = list(Category10_10[: max(2, len(names))]) if len(names) <= 10 else list(turbo(len(names)))
    mapper = LinearColorMapper(palette=palette, low=-0.5, high=len(palette) - 0.5)
    fig.image(image=[codes], color_mapper=mapper, **placement)
    labels = {i: (n if n != "" else "(none)") for i, n in enumerate(names)}
    fig.add_layout(ColorBar(color_mapper=mapper, ticker=FixedTicker(ticks=list(labels)), width=10,
                            major_label_overrides=labels), "right")
    return fig
