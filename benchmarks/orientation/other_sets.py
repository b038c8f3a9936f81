"""The orientation pipeline on test sets other than the benchmark's: for comparing two versions of the code.

Prints, with the shipped ``cu-cu2o`` weights and one torch thread:

- the 3,072 benchmark patterns that ``diagnose.py`` (every 4th pattern) leaves out: median error, % within
  5° (strict and counting a flagged ambiguity), phase accuracy, % flagged, CPU seconds of the answers;
- the model card's training-like patterns (``publish.refined_on_simulation``) at 300 keV (2,048) and 200 keV (1,024);
- the card's thick Bloch-wave polycrystal (32×32, ``publish.THICK_DYNAMICAL``).

Run one checkout against another by pointing ``PYTHONPATH`` at each (e.g. a ``git worktree`` of the old
commit): ``PYTHONPATH=/path/to/tree .venv/bin/python benchmarks/orientation/other_sets.py``. Needs the
benchmark data (``make_data.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import stemkit
from stemkit.orientation.decode import Decoded
from stemkit.orientation.evaluation import on_polycrystal
from stemkit.orientation.mapper import OrientationMapper
from stemkit.orientation.metrics import orientation_metrics
from stemkit.orientation.publish import THICK_DYNAMICAL, refined_on_simulation
from stemkit.physics.rotations import quaternion_to_matrix
from stemkit.preprocess import find_peaks

# last: make_data puts its own checkout on sys.path, which must not decide where stemkit comes from
from make_data import data_dir, load_cube  # noqa: E402


def held_out_benchmark(mapper: OrientationMapper) -> str:
    """Figures on the benchmark patterns whose index is not a multiple of 4."""
    peaks = find_peaks(load_cube(data_dir(quick=False)))
    keep = np.flatnonzero(np.arange(peaks.sizes["scan_y"] * peaks.sizes["scan_x"]) % 4 != 0)
    flat = [peaks[v].values.reshape(-1, peaks.sizes["peak"])[keep] for v in ("kx", "ky", "intensity", "valid")]
    start = time.process_time()
    answers = mapper.answer_arrays(*flat, beam_energy_kev=float(peaks.attrs["beam_energy_kev"]),
                                   beam_radius=float(peaks.attrs["probe_radius"]))
    cpu = time.process_time() - start
    truth = np.load(data_dir(quick=False) / "truth.npz")
    decoded = Decoded(**{name: answers[name] for name in Decoded.__dataclass_fields__})
    figures = orientation_metrics(decoded, quaternion_to_matrix(truth["quaternion"].reshape(-1, 4)[keep]),
                                  truth["phase"].ravel()[keep], [c.point_group for c in mapper.crystals_])
    return (f"median {figures['median_deg']:.2f}°, within 5° {figures['within_5deg']:.1f} %, flagged counted "
            f"{figures['within_5deg_or_flagged']:.1f} %, phase {figures['phase_accuracy']:.1f} %, ambiguous "
            f"{figures['ambiguous']:.1f} %, {cpu:.1f} CPU-s for {len(keep)} patterns")


def main() -> None:
    torch.set_num_threads(1)
    mapper = OrientationMapper.pretrained("cu-cu2o")
    print(f"stemkit from {Path(stemkit.__file__).parent}", flush=True)
    print("benchmark, held-out 3072:", held_out_benchmark(mapper), flush=True)
    for kev, n in ((300.0, 2048), (200.0, 1024)):
        figures = refined_on_simulation(mapper, n=n, beam_energy_kev=kev)
        print(f"training-like, {kev:.0f} keV:", {k: round(v, 2) for k, v in figures.items() if "per_s" not in k}, flush=True)
    figures = on_polycrystal(mapper, scan_shape=(32, 32), **THICK_DYNAMICAL)
    print("thick Bloch polycrystal:", {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()
                                       if "per_s" not in k}, flush=True)


if __name__ == "__main__":
    main()
