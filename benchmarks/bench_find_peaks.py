"""Throughput and accuracy of :func:`stemkit.find_peaks` on 128x128 patterns (stemkit alone).

The side-by-side comparison with py4DSTEM's find_Bragg_disks (issue 4) is still to come;
this script measures stemkit's own figures on the same rendered patterns the tests use.

Run: ``.venv/bin/python benchmarks/bench_find_peaks.py [scan]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stemkit.preprocess import find_peaks  # noqa: E402
from tests.preprocess.test_peaks import match, random_lattice_patterns  # noqa: E402


def main(scan: int = 64) -> None:
    small, truth = random_lattice_patterns(n=48, dose=2e5)
    found, errors, fp = match(find_peaks(small), truth)
    above = found[:, 1] >= 5
    print(f"recall (>= 5 sigma/pixel) {found[above, 0].mean():.3f}; "
          f"position RMS {np.sqrt(np.mean(errors[errors[:, 1] >= 5, 0] ** 2)):.3f} px (>= 5 sigma), "
          f"{np.sqrt(np.mean(errors[errors[:, 1] >= 10, 0] ** 2)):.3f} px (>= 10 sigma); {fp:.2f} false positives/pattern")
    index_y, index_x = np.arange(scan) % 6, np.arange(scan) % 8
    big = small.isel(scan_y=index_y, scan_x=index_x)
    big = big.assign_coords(scan_y=np.arange(scan, dtype=float), scan_x=np.arange(scan, dtype=float))
    big = big.copy(data=np.ascontiguousarray(big.values))
    find_peaks(big.isel(scan_y=slice(0, 2)))  # warm-up
    start = time.perf_counter()
    find_peaks(big)
    elapsed = time.perf_counter() - start
    print(f"{scan * scan} patterns of 128x128 in {elapsed:.2f} s: {scan * scan / elapsed:.0f} patterns/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
