"""Run stemkit's CCSTAE and LatticeFit on every benchmark film (issue 7), timed.

One CCSTAE configuration (the defaults) for every noise level; nothing is set per level.
Each method's own automatic reference is used. Writes ``results/<method>_<film>.npz`` with
the maps, the reference map, wall and CPU seconds of fit + transform.

Run: ``.venv/bin/python benchmarks/strain/run_stemkit.py [--threads N] [--only ccstae|lattice] [films...]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from stemkit.data.datacube import datacube
from stemkit.strain import CCSTAE, LatticeFit

HERE = Path(__file__).resolve().parent


def load(path: Path):
    npz = np.load(path)
    data = datacube(npz["counts"].astype(np.float32), k_step=float(npz["k_step"]),
                    beam_energy_kev=float(npz["beam_energy_kev"]), scan_step_nm=2.0)
    return data, npz


def run(method: str, data, threads: int) -> tuple[object, float, float]:
    torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    if method == "ccstae":
        result = CCSTAE(progress=False, num_threads=threads, seed=0).fit(data).transform(data)
    else:
        result = LatticeFit().fit(data).transform(data)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("ccstae", "lattice"))
    parser.add_argument("films", nargs="*")
    args = parser.parse_args()
    (HERE / "results").mkdir(exist_ok=True)
    films = [Path(f) for f in args.films] or sorted((HERE / "data").glob("film_bg*.npz"))
    for path in films:
        data, _ = load(path)
        for method in ("lattice", "ccstae"):
            if args.only and method != args.only:
                continue
            result, wall, cpu = run(method, data, args.threads)
            out = HERE / "results" / f"stemkit-{method}-t{args.threads}_{path.stem}.npz"
            np.savez(out, wall_s=wall, cpu_s=cpu, threads=args.threads, reference=result["reference"].values,
                     **{name: result[name].values for name in ("exx", "eyy", "exy", "rotation")})
            print(f"{path.stem} {method} threads={args.threads}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)


if __name__ == "__main__":
    main()
