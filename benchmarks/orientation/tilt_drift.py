"""How far the refinement moves an answer started at the truth, and where the tilt polish puts it (a diagnosis).

The refinement's excitation-error term pulls the reflections bright for their |F| to the Bragg condition;
where no reflection of a pattern is exactly there, that tilts the answer. Started at the true orientation,
a consistent estimator would stay there; the drift measures the bias (and the noise) of the method. For
every ``--step``-th pattern of the issue-5 benchmark (its peaks from ``answers.py``'s cache, found once
with ``find_peaks``), and for clean kinematic Cu and Cu2O spots (sinc² shape factor, 30 nm), this prints
the median drift of :func:`~stemkit.orientation.refine.refine_candidates` from the truth, with the
excitation-error term as it is and switched off (positions only), and after
:func:`~stemkit.orientation.tilt.polish_tilt`.

Run: ``.venv/bin/python benchmarks/orientation/tilt_drift.py [--step 2]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answers import benchmark_peaks  # noqa: E402
from make_data import data_dir  # noqa: E402
from stemkit.orientation.mapper import OrientationMapper  # noqa: E402
from stemkit.orientation.refine import RefinementSettings, ReflectionTable, refine_candidates  # noqa: E402
from stemkit.orientation.selection import strongest_peaks  # noqa: E402
from stemkit.orientation.tilt import polish_tilt  # noqa: E402
from stemkit.physics.kinematic import simulate_kinematic  # noqa: E402
from stemkit.physics.presets import crystal  # noqa: E402
from stemkit.physics.rotations import misorientation_angle, quaternion_to_matrix, random_quaternions  # noqa: E402

SETTINGS = {"as it is": RefinementSettings(),
            "positions only": replace(RefinementSettings(), sigma_s=1e3, final_sigma_s=1e3)}


def drifts(name: str, peaks: tuple[torch.Tensor, ...], truth: np.ndarray, table: ReflectionTable) -> dict[str, np.ndarray]:
    """Each pattern's drift from the truth (°) under each setting, and after the tilt polish."""
    group = crystal(name).point_group
    start = torch.as_tensor(truth, dtype=torch.float32)
    out = {}
    for label, settings in SETTINGS.items():
        refined = refine_candidates(*peaks, start[:, None], table, beam_energy_kev=300.0, settings=settings)
        rotation = refined.rotations[:, 0]
        out[label] = misorientation_angle(rotation.double().numpy(), truth, group)
        if label == "as it is":
            polished = polish_tilt(*peaks, rotation, table, beam_energy_kev=300.0)
            out["then polished"] = misorientation_angle(polished.double().numpy(), truth, group)
    return out


def line(label: str, drift: dict[str, np.ndarray]) -> str:
    """The median drift of each setting."""
    count = len(next(iter(drift.values())))
    return f"  {label:6s} ({count} patterns): " + ", ".join(f"{k} {np.median(v):.3f}°" for k, v in drift.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tables = {c.name: t for c, t in zip(*(lambda m: (m.crystals_, m._reflection_tables()))(OrientationMapper.pretrained("cu-cu2o")))}
    p = benchmark_peaks()
    with np.load(data_dir(quick=False) / "truth.npz") as f:
        truth_q, truth_phase, phases = f["quaternion"].reshape(-1, 4), f["phase"].ravel(), [str(x) for x in f["phases"]]
    print("benchmark peaks (kinematic, sinc² shape factor, 10-40 nm, 1e5 electrons), refinement started at the truth:")
    chosen = np.arange(0, len(truth_q), args.step)
    every = []
    for index, name in enumerate(phases):
        members = chosen[truth_phase[chosen] == index]
        peaks = strongest_peaks(p["kx"][members], p["ky"][members], p["intensity"][members], p["valid"][members],
                                float(p["radius"]))
        every.append(drifts(name, peaks, quaternion_to_matrix(truth_q[members]), tables[name]))
        print(line(name, every[-1]))
    print(line("both", {k: np.concatenate([d[k] for d in every]) for k in every[0]}))
    print("clean kinematic spots (30 nm, s_max 0.1 1/Å), refinement started at the truth:")
    for name in ("Cu", "Cu2O"):
        truth = quaternion_to_matrix(random_quaternions(128, seed=1))
        spots = simulate_kinematic(crystal(name), truth, beam_energy_kev=300.0, k_max=1.6, thickness=300.0, s_max=0.1,
                                   max_reflections=24, dtype=np.float64)
        weight = np.where(spots.valid, np.sqrt(np.where(spots.valid, spots.intensity, 0.0)), 0.0)
        peaks = tuple(torch.tensor(np.nan_to_num(a), dtype=torch.float32) for a in (spots.kx, spots.ky, weight))
        print(line(name, drifts(name, peaks, truth, tables[name])))


if __name__ == "__main__":
    main()
