"""Find the Bragg peaks of the benchmark patterns with stemkit (issue 4); save them in absolute pixels.

Runs ``stemkit.preprocess.find_peaks`` with the vacuum probe on every ``*.npz`` written by
``make_data.py``, timed by the wall clock after a warm-up, by the rule of ``timing.py`` (the
same as py4DSTEM's): ``--repeat`` measurements, each repeating whole runs on the stack for at
least ``--min-time`` seconds; the figure is the best measurement's mean time per run. Writes
``results/stemkit-t<threads>_<name>.npz``: ``row``, ``col`` (absolute detector pixels,
NaN-padded), ``intensity``, ``significance``, ``seconds`` (mean seconds per run of each
measurement), ``runs`` (runs per measurement), ``n_patterns`` and the parameters.

Run: ``.venv/bin/python benchmarks/find_peaks/run_stemkit.py [--data DIR] [--out DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import stemkit  # noqa: E402
import timing  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from stemkit.preprocess import find_peaks, workers  # noqa: E402

HERE = Path(__file__).resolve().parent
PARAMS = {"threshold": 5.0, "max_peaks": 64, "subpixel": "fit", "noise": "poisson"}


def as_datacube(patterns: np.ndarray, k_step: float) -> xr.DataArray:
    """The stack as a canonical (scan_y, scan_x, ky, kx) DataArray: a square-ish scan, k = 0 at (64, 64)."""
    n = patterns.shape[0]
    ny = int(np.sqrt(n))
    while n % ny:
        ny -= 1
    return stemkit.datacube(patterns.reshape(ny, n // ny, *patterns.shape[1:]), k_step=k_step, beam_energy_kev=300.0)


def to_pixels(peaks: xr.Dataset, k_step: float, origin: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (row, col) pixels from beam-relative ky, kx and the measured beam position."""
    n = peaks.sizes["scan_y"] * peaks.sizes["scan_x"]
    ky = (peaks.ky + peaks.beam_ky).values.reshape(n, -1)
    kx = (peaks.kx + peaks.beam_kx).values.reshape(n, -1)
    valid = peaks.valid.values.reshape(n, -1)
    row = np.where(valid, origin[0] + ky / k_step, np.nan)
    col = np.where(valid, origin[1] + kx / k_step, np.nan)
    return row, col


def code_version() -> str:
    """The commit, and the hash of peaks.py (edited concurrently), that produced the numbers."""
    root = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "stemkit/preprocess"], cwd=root).returncode != 0
    digest = hashlib.sha256((root / "stemkit/preprocess/peaks.py").read_bytes()).hexdigest()[:12]
    return f"{commit}{' + uncommitted stemkit/preprocess changes' if dirty else ''}, peaks.py sha256 {digest}"


def parallelism() -> str:
    """How find_peaks runs its blocks with more than one torch thread: worker processes, or threads."""
    if torch.get_num_threads() == 1:
        return "this thread"
    return "this thread + worker processes" if workers.available() else "Python threads"


def run_file(path: Path, out: Path, repeat: int, min_time: float) -> None:
    """Warm up, time ``repeat`` measurements of at least ``min_time`` s on the whole stack, save the peaks of the last run."""
    with np.load(path) as f:
        patterns, probe = f["patterns"], f["probe"]
        k_step, origin = float(f["k_step"]), (float(f["origin_row"]), float(f["origin_col"]))
    data = as_datacube(patterns, k_step)
    find_peaks(data.isel(scan_y=slice(0, 2)), probe=probe, **PARAMS)  # warm-up
    peaks, seconds, runs = timing.measure(lambda: find_peaks(data, probe=probe, **PARAMS), repeat, min_time)
    row, col = to_pixels(peaks, k_step, origin)
    n = patterns.shape[0]
    label = f"stemkit-t{torch.get_num_threads()}"
    np.savez(out / f"{label}_{path.stem}.npz", row=row, col=col, intensity=peaks.intensity.values.reshape(n, -1),
             significance=peaks.significance.values.reshape(n, -1), seconds=np.array(seconds), runs=np.array(runs), n_patterns=n,
             params=json.dumps(PARAMS | {"probe": "vacuum", "torch_threads": torch.get_num_threads(), "workers": parallelism(),
                                         "code": code_version()}))
    print(f"{label} {path.stem}: {timing.describe(n, seconds, runs)}; {np.isfinite(row).sum() / n:.1f} peaks/pattern", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--repeat", type=int, default=timing.REPEAT, help="measurements per data file")
    parser.add_argument("--min-time", type=float, default=timing.MIN_TIME, help="seconds of whole runs per measurement")
    parser.add_argument("--only", default="", help="substring of the file names to run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"stemkit {stemkit.__version__ if hasattr(stemkit, '__version__') else ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads ({parallelism()}); code {code_version()}")
    for path in sorted(args.data.glob("*.npz")):
        if args.only in path.name:
            run_file(path, args.out, args.repeat, args.min_time)


if __name__ == "__main__":
    main()
