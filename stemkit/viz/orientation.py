"""``orientation_view(result, data)``: orientation, phase, confidence and ambiguity maps linked to the patterns.

The IPF-Z map (the crystal direction along the beam, TSL colour key) sits beside its key,
one per Laue class of the phases; tapping any map shows the pattern there with the peaks
that were detected (crosses) and the reflections simulated from the predicted orientation
and phase (circles, area growing with intensity), both placed relative to the direct beam.
"""

from __future__ import annotations

from functools import lru_cache

import holoviews as hv
import numpy as np
import panel as pn
import xarray as xr
from bokeh.models import FixedTicker
from bokeh.palettes import Category10_10

from stemkit.data.contract import SCAN_DIMS
from stemkit.orientation.ipf import ipf_colors, ipf_key_image
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal as preset_crystal
from stemkit.viz.elements import frame, map_image, rgb_map
from stemkit.viz.linked import LinkedMaps, categorical_codes, check_same_scan

REQUIRED = ("quaternion", "phase", "confidence", "ambiguous")
FOIL_THICKNESS_A = 300.0  # foil thickness (Å) of the simulated overlay: a typical specimen, not a fit
KEY_WIDTH = 260
MIN_RELATIVE_INTENSITY = 0.01  # overlay reflections at least this fraction of the strongest


class OrientationView(LinkedMaps):
    """Orientation-mapping results linked to the patterns; see :func:`orientation_view`."""

    def __init__(self, result: xr.Dataset, data: xr.DataArray, *, peaks: xr.Dataset | None = None, **params) -> None:
        super().__init__(data, **params)
        missing = [v for v in REQUIRED if v not in result]
        if missing:
            raise ValueError(f"orientation_view needs a result of OrientationMapper.predict with {REQUIRED}; "
                             f"missing {missing}")
        check_same_scan(result, self.data, "orientation result")
        if peaks is not None:
            check_same_scan(peaks, self.data, "peak Dataset")
        self.result = result
        self.peaks = peaks
        self.phases = [str(p) for p in result.attrs.get("phases", sorted(set(result.phase.values.ravel()) - {""}))]

    # -- what is shown ------------------------------------------------------------------
    def ipf_rgb(self) -> np.ndarray:
        """IPF-Z colours (scan_y, scan_x, 3): the result's ``ipf_rgb`` when present, else computed per phase."""
        if "ipf_rgb" in self.result:
            return np.asarray(self.result["ipf_rgb"].transpose(*SCAN_DIMS, "rgb").values, dtype=float)
        quaternions = self.result.quaternion.transpose(*SCAN_DIMS, "quat").values
        phase = self.result.phase.values
        rgb = np.full((*phase.shape, 3), np.nan)
        for name in self.phases:
            where = phase == name
            if where.any():
                rgb[where] = ipf_colors(quaternions[where], _crystal(name).point_group)
        return rgb

    def simulated(self, iy: int, ix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reflections (kx, ky, intensity) simulated from the predicted orientation and phase at (iy, ix),
        relative to the direct beam, for a 30 nm foil, those of at least 1 % of the strongest; empty
        where there is no answer."""
        name = str(self.result.phase.values[iy, ix])
        q = self.result.quaternion.transpose(*SCAN_DIMS, "quat").values[iy, ix]
        if name == "" or not np.all(np.isfinite(q)):
            return np.empty(0), np.empty(0), np.empty(0)
        k_max = float(min(np.abs(self._kx).max(), np.abs(self._ky).max()))
        spots = simulate_kinematic(_crystal(name), q[None], beam_energy_kev=self.data.stem.beam_energy_kev,
                                   k_max=k_max, thickness=FOIL_THICKNESS_A)
        valid = spots.valid[0]
        intensity = spots.intensity[0][valid]
        keep = intensity >= MIN_RELATIVE_INTENSITY * intensity.max() if intensity.size else intensity.astype(bool)
        return spots.kx[0][valid][keep], spots.ky[0][valid][keep], intensity[keep]

    def detected(self, iy: int, ix: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Detected peaks (kx, ky) at (iy, ix) in detector coordinates, and the direct beam (kx, ky) they are
        measured from: from the given peaks, else found now in that one pattern."""
        peaks = self.peaks
        if peaks is None:
            from stemkit.preprocess.peaks import find_peaks

            peaks = find_peaks(self.data.isel(scan_y=[iy], scan_x=[ix]).compute())
            iy_, ix_ = 0, 0
        else:
            iy_, ix_ = iy, ix
        at = peaks.isel(scan_y=iy_, scan_x=ix_)
        valid = at.valid.values.astype(bool)
        beam_kx = float(at.beam_kx) if "beam_kx" in at else 0.0
        beam_ky = float(at.beam_ky) if "beam_ky" in at else 0.0
        return at.kx.values[valid] + beam_kx, at.ky.values[valid] + beam_ky, beam_kx, beam_ky

    def pattern_overlays(self, iy: int, ix: int) -> list[hv.Element]:
        found_kx, found_ky, beam_kx, beam_ky = self.detected(iy, ix)
        sim_kx, sim_ky, intensity = self.simulated(iy, ix)
        size = 6 + 14 * np.sqrt(intensity / intensity.max()) if intensity.size else intensity
        simulated = hv.Points({"kx": sim_kx + beam_kx, "ky": sim_ky + beam_ky, "size": size}, kdims=["kx", "ky"],
                              vdims=["size"], label="simulated").opts(
            marker="circle", size="size", fill_alpha=0, line_color="#00e5ff", line_width=2)
        found = hv.Points((found_kx, found_ky), kdims=["kx", "ky"], label="detected").opts(
            marker="x", size=12, color="#7CFC00", line_width=2)
        return [simulated, found]

    def pattern_title(self, iy: int, ix: int) -> str:
        name = str(self.result.phase.values[iy, ix]) or "no answer"
        confidence = float(self.result.confidence.values[iy, ix])
        return f"[{iy}, {ix}] {name}, confidence {confidence:.2f}"

    # -- layout -------------------------------------------------------------------------
    def panel(self) -> pn.viewable.Viewable:
        x, y = self._x, self._y
        ipf = self.linked(rgb_map(self.ipf_rgb(), x, y, title="IPF-Z (direction along the beam)", name="orientation-ipf"))
        codes, labels = categorical_codes(self.result.phase.values)
        palette = list(Category10_10[: max(2, len(labels))])
        phase = self.linked(map_image(codes, x, y, title="Phase", name="orientation-phase", cmap=palette,
                                      clim=(-0.5, len(palette) - 0.5), label="phase").opts(
            colorbar_opts={"ticker": FixedTicker(ticks=list(range(len(labels)))),
                           "major_label_overrides": dict(enumerate(labels))}))
        confidence = self.linked(map_image(self.result.confidence.values, x, y, title="Confidence",
                                           name="orientation-confidence", cmap="viridis", clim=(0.0, 1.0)))
        ambiguous = self.linked(map_image(self.result.ambiguous.values.astype(float), x, y,
                                          title="Ambiguous (yellow: an alternative fits as well)",
                                          name="orientation-ambiguous", cmap=["#2b2b2b", "#ffd700"], clim=(-0.5, 1.5),
                                          label="ambiguous").opts(
            colorbar_opts={"ticker": FixedTicker(ticks=[0, 1]), "major_label_overrides": {0: "no", 1: "yes"}}))
        pattern = self.pattern_view("orientation-pattern").opts(hv.opts.Overlay(legend_position="bottom_right"))
        panes = [pn.pane.HoloViews(m, linked_axes=False) for m in (ipf, phase, confidence, ambiguous)]
        return pn.Column(
            pn.pane.Markdown(f"### Orientation map — phases {', '.join(self.phases)}"),
            self.controls(),
            pn.Row(pn.Column(pn.Row(panes[0], *self._keys()), pn.Row(*panes[1:3]), panes[3]),
                   pn.pane.HoloViews(pattern, linked_axes=False)),
        )

    def _keys(self) -> list[pn.pane.HoloViews]:
        groups: dict[str, list[str]] = {}
        for name in self.phases:
            groups.setdefault(_crystal(name).point_group.name, []).append(name)
        keys = [ipf_key(group, names) for group, names in groups.items()]
        return [pn.pane.HoloViews(key, linked_axes=False) for key in keys]


def ipf_key(point_group: str, phases: list[str]) -> hv.Overlay:
    """The IPF colour key of a Laue class in stereographic projection, corners labelled."""
    key = ipf_key_image(point_group, size=200)
    x, y = key.x.values, key.y.values
    rgba = key.values
    image = hv.RGB((x, y, rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3]), vdims=list("RGBA")).opts(
        **frame(x, y, KEY_WIDTH), padding=0.1, xaxis=None, yaxis=None, toolbar=None, backend_opts={"plot.name": f"ipf-key-{point_group}"})
    labels = hv.Labels({"x": key.attrs["corner_x"], "y": key.attrs["corner_y"], "text": key.attrs["corner_labels"]},
                       kdims=["x", "y"], vdims=["text"]).opts(text_font_size="11pt", text_color="black",
                                                             text_baseline="top")
    return (image * labels).opts(title=f"IPF-Z key: {', '.join(phases)} ({point_group})")


def orientation_view(result: xr.Dataset, data: xr.DataArray, *, peaks: xr.Dataset | None = None) -> OrientationView:
    """Orientation results linked to the patterns they came from.

    Parameters
    ----------
    result
        The Dataset of :meth:`stemkit.OrientationMapper.predict`: ``quaternion`` (crystal → lab),
        ``phase``, ``confidence``, ``ambiguous`` (and ``ipf_rgb`` if present; computed otherwise).
    data
        The cube the result was computed from (numpy or dask).
    peaks
        The peak Dataset the mapper read (:func:`stemkit.find_peaks`); without it the peaks of
        a tapped pattern are found when it is shown.

    Returns
    -------
    OrientationView
        IPF-Z map with its key, phase, confidence and ambiguity maps; tapping shows the pattern
        with the detected peaks and the reflections simulated from the predicted orientation.
    """
    return OrientationView(result, data, peaks=peaks)


@lru_cache(maxsize=32)
def _crystal(name: str):
    try:
        return preset_crystal(name)
    except (KeyError, ValueError) as error:
        raise ValueError(f"phase {name!r} is not a stemkit preset crystal, so its symmetry and reflections are "
                         f"unknown here; name phases after stemkit.physics.presets") from error
