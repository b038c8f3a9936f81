"""Where stemkit's orientation errors come from, on the issue-5 benchmark data (a diagnosis, not a race).

For every ``--step``-th pattern of ``data/full`` (peaks by ``find_peaks`` with its defaults, the shipped
weights, the true phase) this prints:

1. **Refinement started at the truth**: how far the refinement moves away from the true orientation
   (median, share within 0.5° and 5°) and how much of that is tilt (rotation about an axis in the
   detector plane) rather than rotation about the beam. This is the precision floor of the refinement.
2. **Candidates**: the share of patterns for which at least one candidate refines to within 5° of the
   truth (the model's two hypotheses and their twins; the peak-pair indexing candidates; both), and
   the share for which the score then picks one within 5°.
3. **Truth against its twin**: refined from the truth and from its 180°-about-the-beam twin, how often
   the score prefers the truth (the rest are the patterns where kinematic intensities cannot tell them
   apart, or the score misjudges).
4. **The ambiguity flag** at several ``ambiguity_ratio`` values (the whole selection, predicted phase): the
   share flagged, % within 5° strict and counting a flag, and among flagged patterns how often the answer
   and how often the alternative is right (near-equal shares mean the flag marks real coin flips).

Run: ``.venv/bin/python benchmarks/orientation/diagnose.py [--step 4]`` (needs ``make_data.py``'s data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stemkit.orientation.inference import run_model  # noqa: E402
from stemkit.orientation.loss import SymmetryTable  # noqa: E402
from stemkit.orientation.mapper import OrientationMapper  # noqa: E402
from stemkit.orientation.metrics import disorientation_deg  # noqa: E402
from stemkit.orientation.refine import refine_candidates  # noqa: E402
from stemkit.orientation.selection import INDEXED_CANDIDATES, TWIN, candidates_of, indexed_candidates, select, strongest_peaks  # noqa: E402
from stemkit.orientation.tokens import tokens_from_arrays  # noqa: E402
from stemkit.physics.rotations import quaternion_to_matrix  # noqa: E402
from stemkit.preprocess import find_peaks  # noqa: E402
from make_data import data_dir, load_cube  # noqa: E402



def load(step: int):
    """Peaks, truth and phases of every ``step``-th pattern."""
    folder = data_dir(quick=False)
    data = load_cube(folder)
    peaks = find_peaks(data)
    flat = {v: peaks[v].values.reshape(-1, peaks.sizes["peak"])[::step] for v in ("kx", "ky", "intensity", "valid")}
    truth = np.load(folder / "truth.npz")
    rotation = quaternion_to_matrix(truth["quaternion"].reshape(-1, 4)[::step])
    return flat, rotation, truth["phase"].ravel()[::step], float(peaks.attrs["beam_energy_kev"]), float(peaks.attrs["probe_radius"])


def refine_in_true_phase(mapper, peaks, candidates, phase, energy):
    """Refined rotations and scores of ``candidates`` (n, C, 3, 3), each pattern in its true phase."""
    rotations, scores = torch.zeros_like(candidates), torch.zeros(candidates.shape[:2])
    for index, table in enumerate(mapper._reflection_tables()):
        rows = torch.as_tensor(np.flatnonzero(phase == index))
        refined = refine_candidates(*(p[rows] for p in peaks), candidates[rows], table, beam_energy_kev=energy)
        rotations[rows], scores[rows] = refined.rotations, refined.score
    return rotations, scores


def errors(mapper, rotations, truth, phase) -> np.ndarray:
    """Disorientation (°) of every candidate ``(n, C)`` from the truth in the true phase."""
    groups = [c.point_group for c in mapper.crystals_]
    return np.stack([disorientation_deg(rotations[:, j].double().numpy(), truth, phase, groups)
                     for j in range(rotations.shape[1])], axis=1)


def tilt_and_spin(rotations: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tilt (axis in the detector plane) and spin (about the beam) parts of ``R Rtᵀ``, degrees (small angles)."""
    delta = rotations @ np.swapaxes(truth, 1, 2)
    axis = np.stack([delta[:, 2, 1] - delta[:, 1, 2], delta[:, 0, 2] - delta[:, 2, 0], delta[:, 1, 0] - delta[:, 0, 1]], 1) / 2
    return np.degrees(np.arcsin(np.clip(np.hypot(axis[:, 0], axis[:, 1]), 0, 1))), np.degrees(np.arcsin(np.clip(np.abs(axis[:, 2]), 0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=4, help="use every step-th pattern of the 4096")
    args = parser.parse_args()
    torch.set_num_threads(1)
    flat, truth, phase, energy, radius = load(args.step)
    mapper = OrientationMapper.pretrained("cu-cu2o")
    n = len(truth)
    peaks = strongest_peaks(flat["kx"], flat["ky"], flat["intensity"], flat["valid"], radius)
    true = torch.as_tensor(truth, dtype=torch.float32)
    print(f"{n} patterns (every {args.step}th of benchmarks/orientation/data/full), shipped cu-cu2o weights, true phase")

    refined, scores = refine_in_true_phase(mapper, peaks, torch.stack([true, TWIN @ true], 1), phase, energy)
    drift = errors(mapper, refined[:, :1], truth, phase)[:, 0]
    tilt, spin = tilt_and_spin(refined[:, 0].double().numpy(), truth)
    print(f"1. refinement started at the truth: median {np.median(drift):.2f}°, within 0.5° {100 * np.mean(drift < 0.5):.1f} %, "
          f"within 5° {100 * np.mean(drift < 5):.1f} %; median tilt {np.median(tilt):.2f}°, about the beam {np.median(spin):.3f}°")
    print(f"3. truth preferred to its refined twin by the score: {100 * np.mean((scores[:, 0] > scores[:, 1]).numpy()):.1f} %")

    features, mask = tokens_from_arrays(flat["kx"], flat["ky"], flat["intensity"], flat["valid"], beam_energy_kev=energy,
                                        beam_radius=radius, max_tokens=mapper.max_tokens)
    table = SymmetryTable([c.point_group for c in mapper.crystals_])
    decoded = run_model(mapper.model_, features, mask, table)
    with_twins = lambda hypotheses: torch.cat([hypotheses, TWIN @ hypotheses], 1)  # noqa: E731 (each refined from scratch here)
    model = with_twins(candidates_of(decoded))
    indexed = torch.zeros(n, 2 * INDEXED_CANDIDATES, 3, 3)
    for index, library in enumerate(mapper._pair_libraries()):
        rows = torch.as_tensor(np.flatnonzero(phase == index))
        indexed[rows] = with_twins(indexed_candidates(tuple(p[rows] for p in peaks), library, table.rotations[index],
                                                      beam_energy_kev=energy))
    rotations, scores = refine_in_true_phase(mapper, peaks, torch.cat([model, indexed], 1), phase, energy)
    error = errors(mapper, rotations, truth, phase)
    right = error < 5
    pick = lambda part: error[np.arange(n), part.start + scores[:, part].argmax(1).numpy()] < 5  # noqa: E731
    m, k = model.shape[1], indexed.shape[1]
    model_part, index_part, both = slice(0, m), slice(m, m + k), slice(0, m + k)
    for label, part in ((f"model's {m}", model_part), (f"indexing's {k}", index_part), (f"all {m + k}", both)):
        print(f"2. candidates {label}: one within 5° for {100 * right[:, part].any(1).mean():.1f} %, "
              f"the best-scoring within 5° for {100 * pick(part).mean():.1f} %")

    groups = [c.point_group for c in mapper.crystals_]
    for ratio in (0.95, 0.97, 0.985, 0.995):
        chosen, _ = select(decoded, peaks, mapper._reflection_tables(), table, beam_energy_kev=energy,
                           libraries=mapper._pair_libraries(), ambiguity_ratio=ratio)
        answer = disorientation_deg(chosen.rotation, truth, phase, groups) < 5
        alternative = disorientation_deg(chosen.alternative, truth, phase, groups) < 5
        flagged = chosen.ambiguous
        print(f"4. ambiguity_ratio {ratio}: flagged {100 * flagged.mean():.1f} %, within 5° {100 * answer.mean():.1f} % "
              f"strict, {100 * (answer | (flagged & alternative)).mean():.1f} % counting flags; among flagged the "
              f"answer is right for {100 * answer[flagged].mean():.1f} %, the alternative for "
              f"{100 * alternative[flagged].mean():.1f} %")


if __name__ == "__main__":
    main()
