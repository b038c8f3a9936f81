"""Find the Bragg peaks of the benchmark patterns with py4DSTEM's find_Bragg_disks (issue 4).

Runs in the py4DSTEM venv (``.peers/py4dstem``, made by ``setup_py4dstem.sh``). For each
``*.npz`` from ``make_data.py``: the probe kernel comes from the vacuum probe as the
py4DSTEM tutorials make it (``Probe.get_kernel(mode="sigmoid", radii=(a r, b r))`` around the
probe centre from ``get_probe_size``); the patterns become a ``DataCube`` and
``find_Bragg_disks`` runs on it with the family's parameters from ``tune_py4dstem.py``
(``results/py4dstem_params.json``), timed by the wall clock after a warm-up on 4 patterns,
by the rule of ``timing.py`` (the same as stemkit's): ``--repeat`` measurements, each
repeating whole runs on the stack for at least ``--min-time`` seconds; the figure is the
best measurement's mean time per run. With ``--workers 2`` the scan is split in halves run
by two worker processes (started and warmed up before the clock starts), which is how a
single-threaded finder uses both cores of the machine. ``--oracle`` uses each file's own
best threshold instead of the family's.

py4DSTEM's ``qx`` is the first array axis (detector rows), so ``row = qx``, ``col = qy``.
Writes ``results/py4dstem-<subpixel>[-oracle]-w<workers>-blas<OPENBLAS_NUM_THREADS>_<name>.npz``
with ``row``, ``col``, ``intensity`` (NaN-padded), ``seconds`` (mean seconds per run of each
measurement), ``runs`` (runs per measurement) and the parameters.

Run: ``OPENBLAS_NUM_THREADS=1 .peers/py4dstem/bin/python benchmarks/find_peaks/run_py4dstem.py --subpixel poly``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import py4DSTEM  # noqa: E402
import timing  # noqa: E402
from py4DSTEM.process.calibration import get_probe_size  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_PEAKS = 100

PARAMS_FILE = HERE / "results" / "py4dstem_params.json"


def make_kernel(probe: np.ndarray, params: dict) -> tuple[np.ndarray, float]:
    """The probe kernel of ``params`` and the probe radius (px).

    ``kernel_radii`` ``(a, b)`` gives the tutorials' kernel: the vacuum probe minus a sine-squared
    sigmoid trench from ``a r`` to ``b r`` (``Probe.get_kernel(mode="sigmoid")``); ``None`` the
    ``"flat"`` kernel (the normalised probe). Both are centred on the probe centre from ``get_probe_size``.
    """
    radius, qx0, qy0 = get_probe_size(probe)
    probe_obj = py4DSTEM.Probe(probe.astype(np.float64))
    radii = params.get("kernel_radii")
    if radii is None:
        return probe_obj.get_kernel(mode="flat", origin=(qx0, qy0)), float(radius)
    kernel = probe_obj.get_kernel(mode="sigmoid", origin=(qx0, qy0), radii=(radii[0] * radius, radii[1] * radius))
    return kernel, float(radius)


def finder_kwargs(params: dict, radius: float, subpixel: str, upsample: int) -> dict:
    """Keyword arguments of ``find_Bragg_disks``: spacing in probe radii, edge = ceil(r) as stemkit's, one threshold."""
    threshold = params.get("threshold", 0.0)
    return {
        "corrPower": params["corrPower"],
        "sigma": params["sigma"],
        "subpixel": subpixel,
        "upsample_factor": upsample,
        "minAbsoluteIntensity": threshold if params.get("threshold_type") == "absolute" else 0.0,
        "minRelativeIntensity": threshold if params.get("threshold_type") == "relative" else 0.0,
        "relativeToPeak": 0,
        "minPeakSpacing": params["minPeakSpacing"] * radius,
        "edgeBoundary": int(np.ceil(radius)),
        "maxNumPeaks": MAX_PEAKS,
    }


def load_params(path: Path, family: str, stem: str, oracle: bool) -> dict:
    """The tuned parameters of a family (from ``tune_py4dstem.py``); with ``oracle``, its per-file threshold."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run tune_py4dstem.py first (run.sh does)")
    tuned = json.loads(path.read_text())
    params = dict(tuned["families"][family])
    if oracle:
        params["threshold"] = tuned["oracle"][stem]
    return params


def scan_shape(n: int) -> tuple[int, int]:
    """A square-ish scan holding ``n`` patterns."""
    ny = int(np.sqrt(n))
    while n % ny:
        ny -= 1
    return ny, n // ny


def find(patterns: np.ndarray, kernel: np.ndarray, kwargs: dict) -> np.ndarray:
    """``find_Bragg_disks`` on a DataCube of the stack; ``(n, MAX_PEAKS, 3)`` (row, col, intensity), NaN-padded."""
    ny, nx = scan_shape(patterns.shape[0])
    datacube = py4DSTEM.DataCube(data=patterns.reshape(ny, nx, *patterns.shape[1:]))
    vectors = py4DSTEM.braggvectors.diskdetection.find_Bragg_disks(datacube, kernel, **kwargs)
    out = np.full((patterns.shape[0], MAX_PEAKS, 3), np.nan)
    for index in range(patterns.shape[0]):
        peaks = vectors.raw[index // nx, index % nx]
        k = len(peaks.qx)
        out[index, :k, 0], out[index, :k, 1], out[index, :k, 2] = peaks.qx, peaks.qy, peaks.I
    return out


_WORKER: dict = {}


def _worker_init(patterns: np.ndarray, kernel: np.ndarray, kwargs: dict) -> None:
    """Keep the worker's inputs and warm it up (imports, FFT plans) before any timing."""
    _WORKER.update(patterns=patterns, kernel=kernel, kwargs=kwargs)
    find(patterns[:4], kernel, kwargs)


def _worker_find(bounds: tuple[int, int]) -> np.ndarray:
    return find(_WORKER["patterns"][bounds[0] : bounds[1]], _WORKER["kernel"], _WORKER["kwargs"])


def timed_runs(patterns, kernel, kwargs, workers: int, repeat: int, min_time: float):
    """Time runs (after a warm-up) in this process or in a pool by the rule of ``timing.py``;
    the results of the last run, the mean seconds per run of each measurement, the runs in each."""
    if workers == 1:
        find(patterns[:4], kernel, kwargs)  # warm-up
        return timing.measure(lambda: find(patterns, kernel, kwargs), repeat, min_time)
    n = patterns.shape[0]
    edges = np.linspace(0, n, workers + 1).astype(int)
    chunks = list(zip(edges[:-1], edges[1:]))
    with multiprocessing.get_context("fork").Pool(workers, _worker_init, (patterns, kernel, kwargs)) as pool:
        pool.map(_worker_find, [(0, 4)] * workers)  # every worker started and warm
        parts, seconds, runs = timing.measure(lambda: pool.map(_worker_find, chunks), repeat, min_time)
    return np.concatenate(parts), seconds, runs


def run_file(path: Path, out: Path, args: argparse.Namespace, params: dict) -> Path:
    """Find, time and save the peaks of one data file."""
    with np.load(path) as f:
        patterns, probe, family = f["patterns"].astype(np.float64), f["probe"], str(f["family"])
    if args.limit:
        patterns = patterns[: args.limit]
    params = load_params(args.params_file, family, path.stem, args.oracle) | params
    kernel, radius = make_kernel(probe, params)
    kwargs = finder_kwargs(params, radius, args.subpixel, args.upsample)
    result, seconds, runs = timed_runs(patterns, kernel, kwargs, args.workers, args.repeat, args.min_time)
    n = patterns.shape[0]
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    label = f"py4dstem-{args.subpixel}{'-oracle' if args.oracle else ''}-w{args.workers}-blas{blas}{args.tag}"
    target = out / f"{label}_{path.stem}.npz"
    record = {"py4DSTEM": py4DSTEM.__version__, "workers": args.workers, "probe_radius_px": radius,
              "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
              "kernel": params.get("kernel_radii") or "flat", "threshold_type": params["threshold_type"]} | kwargs
    np.savez(target, row=result[..., 0], col=result[..., 1], intensity=result[..., 2], seconds=np.array(seconds),
             runs=np.array(runs), n_patterns=n, params=json.dumps(record))
    print(f"{label} {path.stem}: {timing.describe(n, seconds, runs)}; {np.isfinite(result[..., 0]).sum() / n:.1f} peaks/pattern",
          flush=True)
    return target


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--subpixel", choices=("pixel", "poly", "multicorr"), default="poly")
    parser.add_argument("--upsample", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=timing.REPEAT, help="measurements per data file")
    parser.add_argument("--min-time", type=float, default=timing.MIN_TIME, help="seconds of whole runs per measurement")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N patterns")
    parser.add_argument("--only", default="", help="substring of the file names to run")
    parser.add_argument("--params-file", type=Path, default=PARAMS_FILE, help="written by tune_py4dstem.py")
    parser.add_argument("--params", default="", help="JSON overriding tuned entries")
    parser.add_argument("--oracle", action="store_true", help="use each file's own best threshold")
    parser.add_argument("--tag", default="", help="suffix of the output label")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    params = json.loads(args.params) if args.params else {}
    print(f"py4DSTEM {py4DSTEM.__version__}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
          f"parameters from {args.params_file.name}{' (oracle thresholds)' if args.oracle else ''}", flush=True)
    for path in sorted(args.data.glob("*.npz")):
        if args.only in path.name:
            run_file(path, args.out, args, params)


if __name__ == "__main__":
    main()
