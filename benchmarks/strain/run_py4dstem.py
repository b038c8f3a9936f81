"""py4DSTEM's StrainMap on the benchmark films (issue 7), in py4DSTEM's own venv.

The tutorial workflow with one parameter set for every noise level: the probe is the
direct beam of the mean pattern (the films have no vacuum), a sigmoid-trench kernel
(``radii = (r, 4 r)``), ``find_Bragg_disks`` with ``subpixel="multicorr"`` (upsampling 16), the origin set to
the detector centre (k = 0 of the data), then ``StrainMap``: ``choose_basis_vectors``,
``set_max_peak_spacing``, ``fit_basis_vectors``, ``get_strain`` with a reference region
given as a boolean map (stemkit LatticeFit's automatic reference of the same film, so the
peer is not given a hand-picked region either). Timed: disk finding + strain (wall, CPU). The fitted basis vectors (``g1x, g1y, g2x, g2y``,
pixels, py4DSTEM axes) are saved too, so ``compare.py`` can also read py4DSTEM's own lattice
fit through stemkit's finite-strain polar decomposition: py4DSTEM's ``get_strain`` is a
first-order (infinitesimal) definition, which differs from DESIGN.md's ``F = V R`` by terms
of the order of the rotation squared (4° ≈ 0.0024).

py4DSTEM's qx is the first array axis (rows = stemkit's ky): its e_xx is stemkit's eyy,
its e_yy stemkit's exx; e_xy is symmetric; and stemkit's rotation = +θ (degrees). These
were found by correlating each raw output with the truth on a background-free film (e_xx
with eyy 0.78, e_yy with exx 0.61, θ with rotation +0.97, −θ would give −0.97);
``compare.py`` repeats the check on every run and prints it.

Run: ``OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg .peers/py4dstem/bin/python benchmarks/strain/run_py4dstem.py``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import py4DSTEM  # noqa: E402
from py4DSTEM.process.calibration import get_probe_size  # noqa: E402

HERE = Path(__file__).resolve().parent
THRESHOLD = 10.0  # minAbsoluteIntensity of the correlation (counts), the same for every film
MAX_PEAKS = 60


def probe_of(mean: np.ndarray) -> np.ndarray:
    """The direct beam cut out of the mean pattern (within 3 radii of the centre)."""
    centre = np.array(mean.shape) // 2
    y, x = np.indices(mean.shape)
    radius, _, _ = get_probe_size(mean)
    cut = np.where(np.hypot(y - centre[0], x - centre[1]) <= 3 * radius, mean, 0.0)
    return cut - np.median(mean)


def run(path: Path, reference: np.ndarray) -> dict:
    npz = np.load(path)
    counts = npz["counts"].astype(np.float32)
    k_step = float(npz["k_step"])
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    datacube = py4DSTEM.DataCube(data=counts)
    mean = counts.mean(axis=(0, 1)).astype(np.float64)
    probe = np.clip(probe_of(mean), 0, None)
    radius, qx0, qy0 = get_probe_size(probe)
    kernel = py4DSTEM.Probe(probe).get_kernel(mode="sigmoid", origin=(qx0, qy0), radii=(radius, 4 * radius))
    bragg = py4DSTEM.braggvectors.diskdetection.find_Bragg_disks(
        datacube, kernel, corrPower=1.0, sigma=0.0, subpixel="multicorr", upsample_factor=16,
        minAbsoluteIntensity=THRESHOLD, minPeakSpacing=4 * radius, edgeBoundary=int(np.ceil(radius)),
        maxNumPeaks=MAX_PEAKS)
    centre = counts.shape[2] // 2  # k = 0 of the films (datacube default origin)
    bragg.calibration.set_origin((float(centre), float(centre)))
    bragg.calibration.set_Q_pixel_size(k_step)
    bragg.calibration.set_Q_pixel_units("A^-1")
    bragg.setcal(center=True, ellipse=False, pixel=False, rotate=False)
    strain = py4DSTEM.StrainMap(bragg)
    strain.choose_basis_vectors(minSpacing=4 * radius, edgeBoundary=int(np.ceil(radius)), maxNumPeaks=10)
    plt.close("all")
    strain.set_max_peak_spacing(2 * radius)  # pixels: setcal(pixel=False) keeps vectors in pixels
    plt.close("all")
    strain.fit_basis_vectors()
    strain.get_strain(gvects=reference)
    plt.close("all")
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    e_xx, e_yy, e_xy, theta, mask = (strain.data[i] for i in range(5))
    bad = ~mask.astype(bool)
    def clean(v):
        return np.where(bad, np.nan, v)
    return {"exx": clean(e_yy), "eyy": clean(e_xx), "exy": clean(e_xy), "rotation": clean(np.degrees(theta)),
            "raw_e_xx": e_xx, "raw_e_yy": e_yy, "raw_theta": theta, "wall_s": wall, "cpu_s": cpu,
            "reference": reference, **{name: strain.g1g2_map[name].data for name in ("g1x", "g1y", "g2x", "g2y")},
            "peaks_per_pattern": np.mean([len(bragg.raw[i, j].qx) for i in range(5)
                                                                  for j in range(5)])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("films", nargs="*")
    args = parser.parse_args()
    films = [Path(f) for f in args.films] or sorted((HERE / "data").glob("film_bg*.npz"))
    print(f"py4DSTEM {py4DSTEM.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}", flush=True)
    for path in films:
        lattice = HERE / "results" / f"stemkit-lattice-t1_{path.stem}.npz"
        if not lattice.exists():
            raise FileNotFoundError(f"{lattice} not found: run run_stemkit.py first (its reference map is used)")
        result = run(path, np.load(lattice)["reference"].astype(bool))
        np.savez(HERE / "results" / f"py4dstem_{path.stem}.npz", **result)
        print(f"{path.stem} py4DSTEM: wall {result['wall_s']:.1f} s, cpu {result['cpu_s']:.1f} s, "
              f"{result['peaks_per_pattern']:.1f} peaks/pattern (first 25)", flush=True)


if __name__ == "__main__":
    main()
