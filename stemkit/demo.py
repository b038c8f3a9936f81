"""The main job (``stemkit demo``, ``make demo``): the three methods on simulated specimens with ground truth.

1. A Cu/Cu2O polycrystal is simulated, saved to zarr and loaded back lazily; virtual bright- and
   dark-field images and the Bragg peaks are computed; the shipped ``cu-cu2o`` orientation model maps
   orientation and phase, scored against the truth (median disorientation, share within 5°, phase).
2. Divisive hierarchical clustering of the same patterns finds the grains without being told them
   (adjusted Rand index against the true grains).
3. A WS2 film under known smooth strain and rotation fields is mapped by the lattice fit and by the
   CC-ST-AE trained on its own patterns (mean absolute errors of exx, eyy, exy and rotation).

Everything is written to one self-contained HTML page: the polycrystal's maps linked to its
patterns (a click on any map shows the pattern there, offline) with the figures above, and the
strain maps of the film beside their truth. Each stage's time is printed as it finishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

STRAIN_FIELDS = ("exx", "eyy", "exy", "rotation")


@dataclass
class DemoLog:
    """Figures and timings gathered while the demo runs, printed as they come."""

    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def say(self, text: str) -> None:
        line = f"[{time.perf_counter() - self.started:6.1f} s] {text}"
        self.lines.append(text)
        print(line, flush=True)


def run_demo(output: Path, *, scan: int = 32, seed: int = 0, strain_epochs: int = 6) -> Path:
    """Run the demo; write the page to ``output`` (and the simulated cube next to it, ``.zarr``).

    Parameters
    ----------
    output
        HTML file to write (replaced if it exists, as is the ``.zarr`` beside it).
    scan
        Probe positions per side of both specimens.
    seed
        Seed of the specimens.
    strain_epochs
        Most training passes of the CC-ST-AE.
    """
    output = Path(output)
    log = DemoLog()
    specimen, data = _polycrystal(output, scan, seed, log)
    orientation = _orientation(specimen, data, log)
    clusters = _clustering(specimen, data, log)
    film, strain = _strain(scan, seed, strain_epochs, log)
    return _page(output, data, orientation, clusters, film, strain, log)


def _polycrystal(output: Path, scan: int, seed: int, log: DemoLog) -> tuple[xr.Dataset, xr.DataArray]:
    from stemkit.io import load, save
    from stemkit.physics.specimens import polycrystal

    specimen = polycrystal(scan_shape=(scan, scan), n_grains=max(4, scan // 4), seed=seed, lazy=True)
    store = save(specimen["intensity"], output.with_suffix(".zarr"), overwrite=True)
    data = load(store, lazy=True)
    log.say(f"simulated a Cu/Cu2O polycrystal, {scan}×{scan} patterns of {data.sizes['ky']}×{data.sizes['kx']} "
            f"pixels, saved to {store.name} and reloaded lazily")
    return specimen, data


def _orientation(specimen: xr.Dataset, data: xr.DataArray, log: DemoLog) -> xr.Dataset:
    from stemkit.orientation import OrientationMapper
    from stemkit.orientation.export import disorientation
    from stemkit.preprocess import find_peaks, virtual_image

    start = time.perf_counter()
    bright, dark = virtual_image(data, "bf").compute(), virtual_image(data, "adf").compute()
    peaks = find_peaks(data)
    result = OrientationMapper.pretrained("cu-cu2o").predict(peaks, progress=False)
    seconds = time.perf_counter() - start
    true_phase, found_phase = specimen["phase"].values, result["phase"].values
    error = np.full(true_phase.shape, np.nan)
    for name in np.unique(true_phase):
        same = (true_phase == name) & (found_phase == name)
        error[same] = disorientation(result["quaternion"].values[same], specimen["quaternion"].values[same], name)
    strict = np.where(np.isnan(error), False, error < 5)
    log.say(f"orientation (virtual images, peaks, cu-cu2o model with refinement) in {seconds:.1f} s: "
            f"phase right {np.mean(true_phase == found_phase):.1%}, median disorientation {np.nanmedian(error):.2f}°, "
            f"{strict.mean():.1%} within 5°")
    scan_coords = {d: data[d] for d in ("scan_y", "scan_x")}
    return result.assign(bright_field=bright, dark_field=dark,
                         error_deg=xr.DataArray(error, dims=("scan_y", "scan_x"), coords=scan_coords))


def _clustering(specimen: xr.Dataset, data: xr.DataArray, log: DemoLog) -> Any:
    from sklearn.metrics import adjusted_rand_score

    from stemkit.clustering import DivisiveClustering

    start = time.perf_counter()
    clusters = DivisiveClustering(progress=False).fit(data)
    ari = adjusted_rand_score(specimen["grain"].values.ravel(), clusters.labels_.values.ravel())
    log.say(f"divisive clustering in {time.perf_counter() - start:.1f} s: {len(clusters.tree_.leaves)} leaves, "
            f"adjusted Rand index {ari:.3f} against the {int(np.unique(specimen['grain']).size)} true grains")
    return clusters


def _strain(scan: int, seed: int, epochs: int, log: DemoLog) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    from stemkit.physics.specimens import strained_film
    from stemkit.strain import CCSTAE, LatticeFit

    film = strained_film("WS2", (scan, scan), dose=1e5, background_fraction=0.25, seed=seed)
    data = film["intensity"]
    results = {}
    for name, method in (("lattice fit", LatticeFit()), ("CC-ST-AE", CCSTAE(epochs=epochs, progress=False,
                                                                               seed=seed))):
        start = time.perf_counter()
        results[name] = method.fit(data).transform(data)
        errors = _strain_errors(results[name], film)
        log.say(f"strain by {name} in {time.perf_counter() - start:.1f} s on a {scan}×{scan} WS2 film: mean absolute "
                f"error " + ", ".join(f"{k} {v:.4f}{'°' if k == 'rotation' else ''}" for k, v in errors.items()))
    return film, results


def _strain_errors(result: xr.Dataset, film: xr.Dataset) -> dict[str, float]:
    """Mean absolute errors against the truth, both relative to the reference region the method chose."""
    reference = result["reference"].values
    return {name: float(np.nanmean(np.abs(result[name].values - (film[name].values
                                                                  - film[name].values[reference].mean()))))
            for name in STRAIN_FIELDS}


def _page(output: Path, data: xr.DataArray, orientation: xr.Dataset, clusters: Any, film: xr.Dataset,
          strain: dict[str, xr.Dataset], log: DemoLog) -> Path:
    from stemkit.viz import report

    maps = {
        "virtual bright field": orientation["bright_field"],
        "virtual annular dark field": orientation["dark_field"],
        "orientation (IPF colours)": orientation["ipf_rgb"],
        "phase": orientation["phase"],
        "confidence": orientation["confidence"],
        "disorientation from the truth (°)": orientation["error_deg"],
        "clusters (divisive)": clusters.labels_.astype(float),
    }
    unlinked = {f"WS2 film, {name}: {variable}": result[variable]
                for name, result in strain.items() for variable in ("exx", "rotation")}
    unlinked |= {f"WS2 film, truth: {variable}": film[variable] for variable in ("exx", "rotation")}
    path = report({"cube": data, **maps}, output, title="stemkit demo", overwrite=True, notes=log.lines,
                  unlinked=unlinked)
    log.say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path
