"""Orientation and phase maps with py4DSTEM's ACOM (issue 5), in the py4DSTEM venv.

Runs in ``.peers/py4dstem`` (``benchmarks/find_peaks/setup_py4dstem.sh`` makes it), on the
data of ``make_data.py``. The recipe is py4DSTEM's own (its ACOM tutorials, PEERS.md):

1. ``find_Bragg_disks`` with the vacuum probe's sigmoid kernel (radii 1 and 4 probe radii),
   subpixel ``poly``, and the absolute threshold that ``benchmarks/find_peaks`` tuned for
   these Cu/Cu2O patterns at 2e5 electrons (1.23, plateau 0.80-1.88), scaled to this dose
   (the correlation scales with the counts): 0.61 at 1e5;
2. calibration: the known Q pixel size and the direct-beam pixel from ``calibration.json``
   (given, not measured: py4DSTEM gets the exact origin), then ``setcal()``;
3. a ``Crystal`` per phase (Cu: fcc; Cu2O: cuprite), ``calculate_structure_factors(k_max)``,
   ``orientation_plan`` with 2° steps in zone axis and in plane at 300 kV over the default
   [001]-[011]-[111] range (the m-3m fundamental triangle, right for both phases);
4. ``match_orientations`` for each phase; a pattern's phase is the one with the higher
   correlation.

Timing: "end to end" is 4D array in (in memory) → orientation and phase maps out: steps 1, 2
and 4. The plans (step 3) are built once per crystal and reported apart (``plan_seconds``),
as a user mapping many scans reuses them. With ``--workers 2`` the scan is split in two halves
run by two forked worker processes (started and warmed up before the clock starts): matching
is single-threaded, so that is how py4DSTEM uses both cores.

Writes ``results/py4dstem[-quick].npz``: ``matrix`` (phase, scan_y, scan_x, 3, 3), py4DSTEM's
orientation matrices M as returned (its own convention; compare.py converts them), ``corr``
(phase, scan_y, scan_x), ``n_peaks`` (scan_y, scan_x), ``seconds`` (end-to-end runs),
``find_seconds``, ``cpu_seconds`` (CPU time of the last run, summed over workers),
``plan_seconds`` (per phase), ``phases`` and ``params`` (JSON).

Run: ``OPENBLAS_NUM_THREADS=1 .peers/py4dstem/bin/python benchmarks/orientation/run_py4dstem.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import py4DSTEM  # noqa: E402
from py4DSTEM.process.calibration import get_probe_size  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_PEAKS = 100
#: benchmarks/find_peaks tuned py4DSTEM on Cu/Cu2O polycrystal patterns at 2e5 electrons.
TUNED_THRESHOLD, TUNED_DOSE = 1.2263252966178657, 2e5
KERNEL_RADII = (1.0, 4.0)  # sigmoid trench, in probe radii (the tuned kernel)
MIN_PEAK_SPACING = 4.0  # probe radii


def cu() -> py4DSTEM.process.diffraction.Crystal:
    """fcc Cu, a = 3.6149 Å (stemkit's preset)."""
    positions = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    return py4DSTEM.process.diffraction.Crystal(positions, 29, 3.6149)


def cuprite() -> py4DSTEM.process.diffraction.Crystal:
    """Cu2O (Pn-3m, origin choice 1), a = 4.2696 Å: O at 2a, Cu at 4b (stemkit's preset)."""
    positions = [[0, 0, 0], [0.5, 0.5, 0.5],
                 [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]]
    return py4DSTEM.process.diffraction.Crystal(positions, [8, 8, 29, 29, 29, 29], 4.2696)


CRYSTALS = {"Cu": cu, "Cu2O": cuprite}


def build_plans(phases: list[str], k_max: float, step: float, kv: float) -> tuple[list, list[float]]:
    """One ACOM plan per phase; the crystals and the seconds each plan took."""
    crystals, seconds = [], []
    for name in phases:
        start = time.perf_counter()
        xtal = CRYSTALS[name]()
        xtal.calculate_structure_factors(k_max)
        xtal.orientation_plan(angle_step_zone_axis=step, angle_step_in_plane=step, accel_voltage=kv * 1e3,
                              progress_bar=False)
        seconds.append(time.perf_counter() - start)
        crystals.append(xtal)
        print(f"plan {name}: {seconds[-1]:.1f} s", flush=True)
    return crystals, seconds


def make_kernel(probe: np.ndarray) -> tuple[np.ndarray, float]:
    """The tutorials' sigmoid kernel around the probe centre, and the probe radius (px)."""
    radius, qx0, qy0 = get_probe_size(probe)
    kernel = py4DSTEM.Probe(probe.astype(np.float64)).get_kernel(
        mode="sigmoid", origin=(qx0, qy0), radii=(KERNEL_RADII[0] * radius, KERNEL_RADII[1] * radius))
    return kernel, float(radius)


_STATE: dict = {}


def map_rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Peaks, calibration and matching for scan rows ``start:stop``.

    Returns (matrix, corr, n_peaks, disk-finding seconds, CPU seconds of this process).
    """
    cube, kernel, kwargs, cal, crystals = (_STATE[k] for k in ("cube", "kernel", "kwargs", "cal", "crystals"))
    sub = cube[start:stop]
    begin, begin_cpu = time.perf_counter(), time.process_time()
    datacube = py4DSTEM.DataCube(data=sub)
    bragg = py4DSTEM.braggvectors.diskdetection.find_Bragg_disks(datacube, kernel, **kwargs)
    bragg.calibration.set_Q_pixel_size(cal["k_step"])
    bragg.calibration.set_Q_pixel_units("A^-1")
    shape = sub.shape[:2]
    bragg.calibration.set_origin((np.full(shape, cal["origin_row"]), np.full(shape, cal["origin_col"])))
    bragg.setcal(center=True, ellipse=False, pixel=True, rotate=False)
    find_seconds = time.perf_counter() - begin
    matrix = np.zeros((len(crystals), *shape, 3, 3))
    corr = np.zeros((len(crystals), *shape))
    for index, xtal in enumerate(crystals):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not elliptically / rotationally calibrated": none is needed
            orientation_map = xtal.match_orientations(bragg, progress_bar=False)
        matrix[index], corr[index] = orientation_map.matrix[:, :, 0], orientation_map.corr[:, :, 0]
    n_peaks = np.array([[len(bragg.raw[i, j].qx) for j in range(shape[1])] for i in range(shape[0])])
    return matrix, corr, n_peaks, find_seconds, time.process_time() - begin_cpu


def _worker_init(state: dict) -> None:
    _STATE.update(state)
    map_rows(0, 1)  # warm-up: imports, FFT plans


def _worker_map(bounds: tuple[int, int]):
    return map_rows(*bounds)


def timed(state: dict, workers: int, repeat: int) -> tuple[tuple, list[float]]:
    """Map the whole scan ``repeat`` times (after a warm-up); the last result and every run's seconds."""
    n_rows = state["cube"].shape[0]
    seconds = []
    if workers == 1:
        _STATE.update(state)
        map_rows(0, 1)
        for _ in range(repeat):
            start = time.perf_counter()
            result = map_rows(0, n_rows)
            seconds.append(time.perf_counter() - start)
        return result, seconds
    edges = np.linspace(0, n_rows, workers + 1).astype(int)
    with multiprocessing.get_context("fork").Pool(workers, _worker_init, (state,)) as pool:
        pool.map(_worker_map, [(0, 1)] * workers)
        for _ in range(repeat):
            start = time.perf_counter()
            parts = pool.map(_worker_map, list(zip(edges[:-1], edges[1:])))
            seconds.append(time.perf_counter() - start)
    joined = (np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1),
              np.concatenate([p[2] for p in parts], axis=0), sum(p[3] for p in parts), sum(p[4] for p in parts))
    return joined, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 16x16 development data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=None, help="absolute find_Bragg_disks threshold")
    parser.add_argument("--k-max", type=float, default=2.0, help="structure factors up to this |g| (1/Å)")
    parser.add_argument("--step", type=float, default=2.0, help="plan step in zone axis and in plane (degrees)")
    parser.add_argument("--rows", type=int, default=0, help="use only the first N scan rows")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    data = HERE / "data" / ("quick" if args.quick else "full")
    cal = json.loads((data / "calibration.json").read_text())
    cube = np.load(data / "cube.npy").astype(np.float64)
    if args.rows:
        cube = cube[: args.rows]
    probe = np.load(data / "probe.npy")
    threshold = args.threshold if args.threshold is not None else TUNED_THRESHOLD * cal["dose"] / TUNED_DOSE
    kernel, radius = make_kernel(probe)
    kwargs = {"corrPower": 1.0, "sigma": 0.0, "subpixel": "poly", "minAbsoluteIntensity": threshold,
              "minRelativeIntensity": 0.0, "relativeToPeak": 0, "minPeakSpacing": MIN_PEAK_SPACING * radius,
              "edgeBoundary": int(np.ceil(radius)), "maxNumPeaks": MAX_PEAKS}
    print(f"py4DSTEM {py4DSTEM.__version__}, {cube.shape[0] * cube.shape[1]} patterns, threshold {threshold:.3f}, "
          f"workers {args.workers}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}",
          flush=True)
    crystals, plan_seconds = build_plans(cal["phases"], args.k_max, args.step, cal["beam_energy_kev"])
    state = {"cube": cube, "kernel": kernel, "kwargs": kwargs, "cal": cal, "crystals": crystals}
    (matrix, corr, n_peaks, find_seconds, cpu_seconds), seconds = timed(state, args.workers, args.repeat)
    n = cube.shape[0] * cube.shape[1]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    target = out / f"py4dstem{'-quick' if args.quick else ''}{args.tag}.npz"
    params = {"py4DSTEM": py4DSTEM.__version__, "workers": args.workers, "k_max": args.k_max,
              "plan_step_deg": args.step,
              "probe_radius_px": radius, "kernel_radii": KERNEL_RADII, "threshold": threshold,
              "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
              "rows": int(cube.shape[0])} | {k: v for k, v in kwargs.items() if k != "subpixel"} | {"subpixel": "poly"}
    np.savez(target, matrix=matrix, corr=corr, n_peaks=n_peaks, seconds=np.array(seconds),
             find_seconds=find_seconds, cpu_seconds=cpu_seconds, plan_seconds=np.array(plan_seconds),
             phases=np.array(cal["phases"]),
             n_patterns=n, params=json.dumps(params))
    print(f"py4DSTEM ACOM: {n} patterns, end to end best {min(seconds):.1f} s ({n / min(seconds):.1f} patterns/s); "
          f"CPU {cpu_seconds:.1f} s, disk finding {find_seconds:.1f} s (both summed over workers); "
          f"plans {sum(plan_seconds):.1f} s; "
          f"{n_peaks.mean():.1f} peaks/pattern → {target.name}", flush=True)


if __name__ == "__main__":
    main()
