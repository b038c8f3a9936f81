"""Write a dask-backed 256×256×128×128 polycrystal to zarr for the dashboard benchmark.

Usage: ``.venv/bin/python benchmarks/viz/make_cube.py /tmp/stemkit-viz-bench/cube.zarr``

The lazy :func:`stemkit.physics.specimens.polycrystal` renders each grain once and adds
Poisson noise row by row, so the 4 GiB cube is streamed to disk without ever being in memory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import stemkit
from stemkit.physics.specimens import polycrystal

SCAN_SHAPE = (256, 256)
PATTERN_SIZE = 128


def main(path: str) -> None:
    start = time.perf_counter()
    specimen = polycrystal(scan_shape=SCAN_SHAPE, n_grains=24, pattern_size=PATTERN_SIZE, lazy=True, seed=3)
    cube = specimen["intensity"]
    stemkit.save(cube, Path(path), overwrite=True)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    print(f"wrote {path}: {cube.shape} {cube.dtype}, {cube.nbytes / 2**30:.2f} GiB of pixels, "
          f"{size / 2**30:.2f} GiB on disk, in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/stemkit-viz-bench/cube.zarr")
