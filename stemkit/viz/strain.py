"""``strain_view(strain, data)``: strain and rotation maps linked to the pattern and the model's reconstruction.

``exx``, ``eyy`` and ``exy`` share one colour range, symmetric about zero, so equal colours
mean equal strain in every map; ``rotation`` has its own symmetric range (degrees). Tapping
any map shows the pattern there and, when one is available, what the model reconstructs.
"""

from __future__ import annotations

from collections.abc import Callable

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from stemkit.viz.elements import map_image, pattern_display, pattern_image
from stemkit.viz.linked import LinkedMaps, check_same_scan

COMPONENTS = ("exx", "eyy", "exy")
Reconstruction = xr.DataArray | Callable[[int, int], np.ndarray]


def symmetric_limit(*maps: np.ndarray, percentile: float = 99.5) -> float:
    """Half-width of a colour range symmetric about zero holding ``percentile`` % of all |values|."""
    values = np.concatenate([np.abs(np.asarray(m, dtype=float)).ravel() for m in maps])
    values = values[np.isfinite(values)]
    limit = float(np.percentile(values, percentile)) if values.size else 0.0
    return limit if limit > 0 else 1e-6


class StrainView(LinkedMaps):
    """Strain results linked to the patterns; see :func:`strain_view`."""

    def __init__(self, strain: xr.Dataset, data: xr.DataArray, *, reconstruction: Reconstruction | None = None,
                 **params) -> None:
        super().__init__(data, **params)
        missing = [v for v in (*COMPONENTS, "rotation") if v not in strain]
        if missing:
            raise ValueError(f"strain_view needs a Dataset with exx, eyy, exy and rotation on (scan_y, scan_x); "
                             f"missing {missing}")
        check_same_scan(strain, self.data, "strain result")
        if reconstruction is None and "reconstruction" in strain:
            reconstruction = strain["reconstruction"]
        if isinstance(reconstruction, xr.DataArray):
            check_same_scan(reconstruction, self.data, "reconstruction")
        self.strain = strain
        self.reconstruction = reconstruction

    def strain_limit(self) -> float:
        """The shared colour half-width of exx, eyy and exy (a fraction, not %)."""
        return symmetric_limit(*(self.strain[c].values for c in COMPONENTS))

    def reconstructed(self, iy: int, ix: int) -> np.ndarray | None:
        """The model's reconstruction of the pattern at (iy, ix), or None without one."""
        if self.reconstruction is None:
            return None
        if isinstance(self.reconstruction, xr.DataArray):
            return np.asarray(self.reconstruction.isel(scan_y=iy, scan_x=ix).values, dtype=float)
        return np.asarray(self.reconstruction(iy, ix), dtype=float)

    def image_at(self, name: str, iy: int, ix: int) -> tuple[np.ndarray, tuple[float, float], str] | None:
        if name != "strain-reconstruction":
            return super().image_at(name, iy, ix)
        values = self.reconstructed(iy, ix)
        if values is None:
            return None
        shown, clim = pattern_display(values, log=self.log_scale)
        return shown, clim, f"Model reconstruction [{iy}, {ix}]"

    @param.depends("pattern_version", "log_scale")
    def _reconstruction_element(self) -> hv.Element:
        iy, ix = self.position
        values = self.reconstructed(iy, ix)
        if values is None:
            return hv.Text(0, 0, "no reconstruction given:\npass reconstruction= to strain_view").opts(
                title="Model reconstruction", xaxis=None, yaxis=None, frame_width=300, frame_height=300,
                backend_opts={"plot.name": "strain-reconstruction"}, toolbar=None)
        if values.shape == (self._ky.size, self._kx.size):
            kx, ky = self._kx, self._ky
        else:
            kx, ky = np.arange(values.shape[1], dtype=float), np.arange(values.shape[0], dtype=float)
        return pattern_image(values, kx, ky, title=f"Model reconstruction [{iy}, {ix}]", name="strain-reconstruction",
                             log=self.log_scale, cmap="inferno").opts(hooks=[self.keep_image("strain-reconstruction")])

    def map_elements(self) -> dict[str, hv.Image]:
        """The four maps: strain in % on one shared symmetric range, rotation in degrees on its own."""
        x, y = self._x, self._y
        limit = 100 * self.strain_limit()
        maps = {c: map_image(100 * self.strain[c].values, x, y, title=f"{c} (%)", name=f"strain-{c}", cmap="RdBu_r",
                             clim=(-limit, limit), label="strain (%)") for c in COMPONENTS}
        bound = symmetric_limit(self.strain["rotation"].values)
        maps["rotation"] = map_image(self.strain["rotation"].values, x, y, title="rotation (°, x towards y)",
                                     name="strain-rotation", cmap="PuOr_r", clim=(-bound, bound), label="rotation (°)")
        return maps

    def panel(self) -> pn.viewable.Viewable:
        limit = 100 * self.strain_limit()
        bound = symmetric_limit(self.strain["rotation"].values)
        maps = [self.linked(element) for element in self.map_elements().values()]
        pattern = self.pattern_view("strain-pattern")
        reconstruction = hv.DynamicMap(self._reconstruction_element)
        return pn.Column(
            pn.pane.Markdown(f"### Strain and rotation — strain colours shared, ±{limit:.2g} %; "
                             f"rotation ±{bound:.2g}°"),
            self.controls(),
            pn.Row(pn.Column(pn.Row(*(pn.pane.HoloViews(m, linked_axes=False) for m in maps[:2])),
                             pn.Row(*(pn.pane.HoloViews(m, linked_axes=False) for m in maps[2:]))),
                   pn.Column(pn.pane.HoloViews(pattern, linked_axes=False),
                             pn.pane.HoloViews(reconstruction, linked_axes=False))),
        )


def strain_view(strain: xr.Dataset, data: xr.DataArray, *, reconstruction: Reconstruction | None = None) -> StrainView:
    """Strain and rotation maps linked to the patterns they came from.

    Parameters
    ----------
    strain
        A Dataset on ``(scan_y, scan_x)`` with ``exx``, ``eyy``, ``exy`` (fractions) and
        ``rotation`` (degrees), e.g. from :class:`stemkit.strain.CCSTAE` ``.transform``.
    data
        The cube the maps were computed from (numpy or dask).
    reconstruction
        What the model reconstructs of each pattern: a DataArray ``(scan_y, scan_x, …, …)``
        (the strain Dataset's ``reconstruction`` variable is used when present), or a function
        ``(iy, ix) -> 2D array`` (e.g. a model's reconstruction of that one pattern).

    Returns
    -------
    StrainView
        exx, eyy, exy with one shared colour range symmetric about zero, rotation with its own;
        tapping shows the pattern and the reconstruction.
    """
    return StrainView(strain, data, reconstruction=reconstruction)
