"""Orientation accuracy on thick, dynamically diffracting specimens, before and after training on Bloch waves.

Issue 11 asks for the model's accuracy on thick (>= 15 nm) Bloch-wave test sets before and after the training
data mixed in dynamical patterns. Each weights folder given is measured on the same two polycrystals,
rendered, noisy (1e5 electrons per pattern) and read by ``find_peaks``:

- ``kinematic``: 15-60 nm grains, kinematic intensities (what the first weights were trained on);
- ``bloch``: the same grains and orientations, Bloch-wave intensities (128 beams, absorption 0.05).

Usage::

    python benchmarks/orientation/dynamical.py stemkit/pretrained/cu-cu2o .runs/cu-cu2o-bloch/final --scan 32
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from stemkit.orientation.evaluation import load_mapper, on_polycrystal
from stemkit.orientation.publish import THICK_DYNAMICAL

FIELDS = ("median_deg", "within_5deg", "within_5deg_or_flagged", "best_hypothesis_within_5deg", "ambiguous",
          "phase_accuracy", "median_disks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", type=Path, help="weights folders or training checkpoints")
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/orientation/results/dynamical.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch "
               f"thread(s)", "scan": args.scan, "specimen": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in THICK_DYNAMICAL.items()}, "models": {}}
    print(f"{'weights':42s} {'specimen':10s} " + " ".join(f"{f[:14]:>14s}" for f in FIELDS))
    for folder in args.weights:
        mapper = load_mapper(folder)
        results["models"][str(folder)] = {"sha256": mapper.weights_sha256_}
        for diffraction in ("kinematic", "bloch"):
            start = time.perf_counter()
            figures = on_polycrystal(mapper, scan_shape=(args.scan, args.scan),
                                     **(THICK_DYNAMICAL | {"diffraction": diffraction}))
            figures["seconds"] = time.perf_counter() - start
            results["models"][str(folder)][diffraction] = figures
            print(f"{str(folder)[-42:]:42s} {diffraction:10s} " + " ".join(f"{figures[f]:14.2f}" for f in FIELDS),
                  flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1, default=float))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
