"""Accuracy of orientation and phase answers against the truth, as the issue scores them.

- ``median_deg``: median disorientation (degrees, in the true phase's point group) of the answer;
- ``within_5deg``: % of patterns whose answer is within 5°;
- ``within_5deg_or_flagged``: % whose answer is within 5°, or that are flagged ambiguous
  and whose alternative is within 5° (a correctly flagged ambiguity counts as right);
- ``best_hypothesis_within_5deg``: % where either hypothesis is within 5° (an upper bound);
- ``ambiguous``: % of patterns flagged ambiguous;
- ``phase_accuracy``: % with the right phase.
"""

from __future__ import annotations

import numpy as np

from stemkit.physics.rotations import misorientation_angle
from stemkit.physics.symmetry import PointGroup
from stemkit.orientation.decode import Decoded

TOLERANCE_DEG = 5.0


def disorientation_deg(a: np.ndarray, b: np.ndarray, phase: np.ndarray, groups: list[PointGroup]) -> np.ndarray:
    """Disorientation in degrees of rotation matrices ``(n, 3, 3)`` pairwise, each in its phase's group."""
    phase = np.asarray(phase)
    if phase.size and (phase.min() < 0 or phase.max() >= len(groups)):
        raise ValueError(f"disorientation_deg: phase indices run {phase.min()}..{phase.max()} but {len(groups)} point "
                         f"group(s) were given; give one group per phase, in phase order")
    angles = np.empty(len(phase))
    for index, group in enumerate(groups):
        members = np.flatnonzero(phase == index)
        if members.size:
            angles[members] = misorientation_angle(a[members], b[members], group)
    return angles


def orientation_metrics(decoded: Decoded, true_rotations: np.ndarray, true_phase: np.ndarray,
                        groups: list[PointGroup]) -> dict[str, float]:
    """The figures of the module docstring, as plain floats."""
    error = disorientation_deg(decoded.rotation, true_rotations, true_phase, groups)
    other = disorientation_deg(decoded.alternative, true_rotations, true_phase, groups)
    good = error <= TOLERANCE_DEG
    flagged_right = decoded.ambiguous & (other <= TOLERANCE_DEG)
    percent = lambda x: float(100.0 * np.mean(x))  # noqa: E731
    return {
        "median_deg": float(np.median(error)),
        "within_5deg": percent(good),
        "within_5deg_or_flagged": percent(good | flagged_right),
        "best_hypothesis_within_5deg": percent(good | (other <= TOLERANCE_DEG)),
        "ambiguous": percent(decoded.ambiguous),
        "phase_accuracy": percent(decoded.phase == true_phase),
        "n": int(len(error)),
    }
