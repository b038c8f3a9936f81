"""Model outputs → per-pattern answers: the orientation, its alternative, whether the pattern is ambiguous, the phase.

The model gives ``K`` rotation hypotheses with weight logits (:mod:`stemkit.orientation.model`).
The answer is the hypothesis of highest weight; the alternative is the next one. A pattern is
**ambiguous** when the alternative still carries at least ``ambiguity_weight`` of the weight
*and* differs from the answer by more than ``ambiguity_angle`` degrees once the predicted
phase's symmetry is taken into account (two hypotheses on the same orientation are not an
ambiguity). ``confidence`` is, for now, the answer's weight: a softmax output, **not yet
calibrated** against measured error rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stemkit.orientation.loss import SymmetryTable, symmetric_geodesic

AMBIGUITY_WEIGHT = 0.2
AMBIGUITY_ANGLE_DEG = 5.0


@dataclass
class Decoded:
    """Per-pattern answers, numpy arrays over the patterns."""

    rotation: np.ndarray  # (n, 3, 3) the answer, crystal → lab
    alternative: np.ndarray  # (n, 3, 3) the next hypothesis (the answer itself when K = 1)
    confidence: np.ndarray  # (n,) weight of the answer (not calibrated)
    alternative_weight: np.ndarray  # (n,)
    separation_deg: np.ndarray  # (n,) symmetric angle between answer and alternative
    ambiguous: np.ndarray  # (n,) bool
    phase: np.ndarray  # (n,) phase index
    phase_probability: np.ndarray  # (n,)


@torch.no_grad()
def decode(
    outputs: dict[str, torch.Tensor],
    table: SymmetryTable,
    *,
    ambiguity_weight: float = AMBIGUITY_WEIGHT,
    ambiguity_angle: float = AMBIGUITY_ANGLE_DEG,
) -> Decoded:
    """Read the answers out of a batch of model outputs (see the module docstring).

    Parameters
    ----------
    outputs
        The model's ``rotations`` ``(B, K, 3, 3)``, ``hypothesis_logits`` ``(B, K)`` and ``phase_logits``.
    table
        The phases' point groups (the predicted phase's group measures the separation).
    ambiguity_weight
        Least weight of the alternative for an ambiguity.
    ambiguity_angle
        Least separation in degrees for an ambiguity.
    """
    rotations = outputs["rotations"].float()
    weights = outputs["hypothesis_logits"].float().softmax(dim=1)
    phase_probability, phase = outputs["phase_logits"].float().softmax(dim=1).max(dim=1)
    ranked = weights.argsort(dim=1, descending=True)
    rows = torch.arange(len(rotations), device=rotations.device)
    best, second = ranked[:, 0], ranked[:, min(1, ranked.shape[1] - 1)]
    rotation, alternative = rotations[rows, best], rotations[rows, second]
    separation = torch.rad2deg(symmetric_geodesic(rotation, alternative, table, phase))
    separation = torch.where(best == second, torch.zeros_like(separation), separation)
    alternative_weight = torch.where(best == second, torch.zeros_like(separation), weights[rows, second])
    ambiguous = (alternative_weight >= ambiguity_weight) & (separation > ambiguity_angle)
    as_numpy = lambda t: t.cpu().numpy()  # noqa: E731
    return Decoded(
        rotation=as_numpy(rotation).astype(np.float64), alternative=as_numpy(alternative).astype(np.float64),
        confidence=as_numpy(weights[rows, best]), alternative_weight=as_numpy(alternative_weight),
        separation_deg=as_numpy(separation), ambiguous=as_numpy(ambiguous), phase=as_numpy(phase),
        phase_probability=as_numpy(phase_probability),
    )
