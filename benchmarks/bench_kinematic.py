"""Throughput of :func:`stemkit.physics.simulate_kinematic` (not collected by pytest).

Run: ``.venv/bin/python benchmarks/bench_kinematic.py [N]``; figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from stemkit.physics import crystal, random_quaternions, reflections, simulate_kinematic


def main(n: int = 200_000) -> None:
    orientations = random_quaternions(n, seed=0)
    cases = [
        ("s_max=0.03, top 64", dict(excitation_error_width=0.01, s_max=0.03, max_reflections=64)),
        ("thickness=300 Å, s_max=0.03, top 64", dict(thickness=300.0, s_max=0.03, max_reflections=64)),
        ("thickness=300 Å, top 64 (no s_max)", dict(thickness=300.0, max_reflections=64)),
    ]
    for name in ("Cu", "Cu2O"):
        for k_max in (1.5, 2.0):
            xtal = crystal(name)
            n_ref = len(reflections(xtal, k_max))
            for label, kwargs in cases:
                simulate_kinematic(xtal, orientations[:2048], beam_energy_kev=300, k_max=k_max, **kwargs)  # warm-up
                start = time.perf_counter()
                patterns = simulate_kinematic(xtal, orientations, beam_energy_kev=300, k_max=k_max, **kwargs)
                elapsed = time.perf_counter() - start
                mean_valid = patterns.valid.sum(axis=1).mean()
                print(f"{name:5s} k_max={k_max} ({n_ref:5d} reflections) {label:38s}: "
                      f"{n / elapsed:9.0f} patterns/s  ({mean_valid:.1f} spots/pattern)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
