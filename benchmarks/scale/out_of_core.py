"""Out of core: a zarr cube several times larger than a memory budget, mapped with bounded memory (issue 10).

Usage::

    .venv/bin/python benchmarks/scale/out_of_core.py                 # all stages, default sizes
    .venv/bin/python benchmarks/scale/out_of_core.py --scan 128      # a quicker, smaller run

Three stages, each in a fresh Python process so that each one's peak resident memory (the
operating system's ``ru_maxrss``) is its own:

1. ``write``: a lazy Cu/Cu2O ``polycrystal`` (scan × scan patterns of 128 × 128 float32) is
   simulated and written to a sharded zarr store chunk by chunk (never whole in memory);
   the ground truth (phase, orientation: small) beside it.
2. ``virtual``: the store is opened lazily; the beam radius, a bright-field and an annular
   dark-field image are computed in one pass (``dask.compute``).
3. ``orient``: ``OrientationMapper.pretrained("cu-cu2o").predict(data, lazy=True)``, written
   to zarr block by block with ``save_by_chunks``; scored against the truth.

The budget is fixed before the run (``--budget-gib``, default 1 GiB) and the cube is made
``--times`` (default 4) times larger; each stage prints its peak memory, its ratio to the
budget, its wall and CPU seconds, and the table goes to ``benchmarks/scale/results/``.
Dask runs on its threaded scheduler with ``--threads`` workers (torch: one thread each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GiB = 2**30
HERE = Path(__file__).resolve().parent
PATTERN = 128


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stage_write(folder: Path, scan: int) -> dict:
    import stemkit
    from stemkit.physics.specimens import polycrystal

    specimen = polycrystal(("Cu", "Cu2O"), scan_shape=(scan, scan), n_grains=max(4, scan // 10), pattern_size=PATTERN,
                           k_step=3.2 / PATTERN, dose=1e5, seed=3, lazy=True)
    cube = specimen["intensity"]
    stemkit.save(cube, folder / "cube.zarr", overwrite=True)
    stemkit.save(specimen.drop_vars("intensity").compute(), folder / "truth.nc", overwrite=True)
    on_disk = sum(f.stat().st_size for f in (folder / "cube.zarr").rglob("*") if f.is_file())
    return {"cube_bytes": int(cube.nbytes), "on_disk_bytes": on_disk, "shape": list(cube.shape)}


def stage_virtual(folder: Path) -> dict:
    import dask

    import stemkit
    from stemkit.preprocess import beam_radius, virtual_image

    data = stemkit.load(folder / "cube.zarr", lazy=True)
    radius = beam_radius(data)
    bf, adf = dask.compute(virtual_image(data, "bf", beam_radius=radius), virtual_image(data, "adf", beam_radius=radius))
    return {"beam_radius": radius, "bf_mean": float(bf.mean()), "adf_mean": float(adf.mean()),
            "chunk": list(data.data.chunksize)}


def stage_orient(folder: Path) -> dict:
    import numpy as np

    import stemkit
    from stemkit.io import save_by_chunks
    from stemkit.orientation.export import disorientation

    data = stemkit.load(folder / "cube.zarr", lazy=True)
    mapper = stemkit.OrientationMapper.pretrained("cu-cu2o")
    lazy = mapper.predict(data, lazy=True)
    save_by_chunks(lazy, folder / "orientation.zarr", overwrite=True)
    result, truth = stemkit.load(folder / "orientation.zarr"), stemkit.load(folder / "truth.nc")
    found, expected = result["phase"].values, truth["phase"].values
    error = np.full(found.shape, np.nan)
    for name in ("Cu", "Cu2O"):
        same = (found == name) & (expected == name)
        error[same] = disorientation(result["quaternion"].values[same], truth["quaternion"].values[same], name)
    return {"patterns": int(found.size), "blocks": len(lazy.chunks["scan_y"]),
            "phase_accuracy": float((found == expected).mean()), "median_error_deg": float(np.nanmedian(error)),
            "within_5deg": float(np.nanmean(error < 5))}


STAGES = {"write": stage_write, "virtual": stage_virtual, "orient": stage_orient}


def run_stage(name: str, folder: Path, scan: int, threads: int) -> dict:
    """One stage in this process, on dask's threaded scheduler; its figures as a dict."""
    import dask
    import torch

    torch.set_num_threads(1)
    dask.config.set(scheduler="threads", num_workers=threads)
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    figures = STAGES[name](folder, scan) if name == "write" else STAGES[name](folder)
    return {"stage": name, "wall_s": time.perf_counter() - start_wall, "cpu_s": cpu_seconds() - start_cpu,
            "peak_rss_bytes": peak_rss_bytes(), **figures}


def run_all(args: argparse.Namespace) -> None:
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    budget = args.budget_gib * GiB
    scan = args.scan or int(round((args.times * budget / (PATTERN * PATTERN * 4)) ** 0.5))
    print(f"budget {args.budget_gib:.2f} GiB; cube {scan}×{scan}×{PATTERN}×{PATTERN} float32 = "
          f"{scan * scan * PATTERN * PATTERN * 4 / GiB:.2f} GiB; {args.threads} dask threads; folder {folder}", flush=True)
    rows = []
    stages = ["virtual", "orient"] if args.keep_cube and (folder / "cube.zarr").exists() else list(STAGES)
    for name in stages:
        command = [sys.executable, __file__, "--stage", name, "--folder", str(folder), "--scan", str(scan),
                   "--threads", str(args.threads)]
        out = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(figures)
        print(f"  {name}: peak {figures['peak_rss_bytes'] / GiB:.2f} GiB in {figures['wall_s']:.0f} s", flush=True)
    table = render(rows, budget, scan)
    print(table)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "out_of_core.md").write_text(table + "\n")
    (HERE / "results" / "out_of_core.json").write_text(json.dumps(rows, indent=1) + "\n")


def render(rows: list[dict], budget: float, scan: int) -> str:
    cube = scan * scan * PATTERN * PATTERN * 4
    lines = [f"cube {scan}×{scan}×{PATTERN}×{PATTERN} float32: {cube / GiB:.2f} GiB = {cube / budget:.1f}× the "
             f"{budget / GiB:.2f} GiB budget", "",
             "| stage | peak resident memory | ÷ budget | ÷ cube | wall (s) | CPU (s) | notes |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        notes = {"write": lambda r: f"{r['on_disk_bytes'] / GiB:.2f} GiB on disk",
                 "virtual": lambda r: f"BF + ADF in one pass, chunks {tuple(r['chunk'])}",
                 "orient": lambda r: (f"{r['patterns']} patterns in {r['blocks']} blocks; phase "
                                      f"{r['phase_accuracy']:.1%}, median {r['median_error_deg']:.2f}°, "
                                      f"{r['within_5deg']:.1%} within 5°; {r['patterns'] / r['wall_s']:.0f} patterns/s")}
        rss = row["peak_rss_bytes"]
        lines.append(f"| {row['stage']} | {rss / GiB:.2f} GiB | {rss / budget:.2f} | {rss / cube:.3f} | "
                     f"{row['wall_s']:.0f} | {row['cpu_s']:.0f} | {notes[row['stage']](row)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-gib", type=float, default=1.0, help="memory budget each stage must stay under")
    parser.add_argument("--times", type=float, default=4.0, help="cube size as a multiple of the budget")
    parser.add_argument("--scan", type=int, default=None, help="scan side (overrides --times)")
    parser.add_argument("--threads", type=int, default=2, help="dask threads")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/stemkit-out-of-core"))
    parser.add_argument("--keep-cube", action="store_true", help="reuse a cube already written in --folder")
    parser.add_argument("--stage", choices=list(STAGES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.folder, args.scan, args.threads)))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
