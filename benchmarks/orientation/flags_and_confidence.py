"""What the ambiguity flags and the confidence of ``OrientationMapper.predict`` mean on the benchmark map.

On the issue-5 benchmark cube (``make_data.py``'s 64×64 Cu/Cu2O polycrystal; peaks by ``find_peaks``, shipped
weights, one torch thread) this prints:

1. **The twin flags**: the patterns flagged only because their neighbours split between their answer and its
   180°-about-the-beam twin (default :class:`NeighbourSettings` against ``twin_share=2``, which never flags):
   how many, and how often the answer and how often the alternative is within 5° of the truth. Near-equal
   shares mean the flag marks real coin flips.
2. **The confidence**: with the neighbours' pass and without, the Brier score, the mean confidence against the
   share right (within 5°, right phase), and the reliability table (mean confidence and share right per bin).

Run: ``.venv/bin/python benchmarks/orientation/flags_and_confidence.py`` (needs the benchmark data).
"""

from __future__ import annotations

import numpy as np
import torch

from stemkit.orientation.confidence import reliability
from stemkit.orientation.evaluation import _as_decoded
from stemkit.orientation.mapper import OrientationMapper
from stemkit.orientation.metrics import disorientation_deg
from stemkit.orientation.neighbours import NeighbourSettings
from stemkit.physics.rotations import quaternion_to_matrix
from stemkit.preprocess import find_peaks

# last: make_data puts its own checkout on sys.path, which must not decide where stemkit comes from
from make_data import data_dir, load_cube  # noqa: E402

TOLERANCE_DEG = 5.0


def main() -> None:
    torch.set_num_threads(1)
    mapper = OrientationMapper.pretrained("cu-cu2o")
    names = [c.name for c in mapper.crystals_]
    groups = [c.point_group for c in mapper.crystals_]
    folder = data_dir(quick=False)
    truth = np.load(folder / "truth.npz")
    rotations, phase = quaternion_to_matrix(truth["quaternion"].reshape(-1, 4)), truth["phase"].ravel()
    peaks = find_peaks(load_cube(folder))

    def right(decoded, which: str) -> np.ndarray:
        error = disorientation_deg(getattr(decoded, which), rotations, phase, groups)
        return (error < TOLERANCE_DEG) & (decoded.phase == phase)

    with_flags = _as_decoded(mapper.predict(peaks, progress=False), names)
    without = _as_decoded(mapper.predict(peaks, progress=False, neighbours=NeighbourSettings(twin_share=2.0)), names)
    new = with_flags.ambiguous & ~without.ambiguous
    print(f"1. twin flags: {100 * new.mean():.1f} % of the patterns newly flagged; among them the answer is right "
          f"for {100 * right(with_flags, 'rotation')[new].mean():.1f} %, the alternative for "
          f"{100 * right(with_flags, 'alternative')[new].mean():.1f} %")

    for neighbours in (True, False):
        result = mapper.predict(peaks, progress=False, neighbours=neighbours)
        confidence = result["confidence"].values.ravel()
        correct = right(_as_decoded(result, names), "rotation")
        table = ", ".join(f"{p:.2f} → {r:.2f} ({c})" for p, r, c in reliability(confidence, correct))
        print(f"2. neighbours {'on' if neighbours else 'off'}: Brier {np.mean((confidence - correct) ** 2):.3f}, "
              f"mean confidence {confidence.mean():.3f} against {correct.mean():.3f} right; "
              f"per bin, mean confidence → share right (patterns): {table}")


if __name__ == "__main__":
    main()
