"""Symmetry-aware geodesic distance between orientations, batched, one point group per sample.

DESIGN.md: ``R`` and ``R @ S`` are the same orientation for every proper rotation ``S`` of
the crystal's point group, so the distance between a prediction ``P`` and the truth ``T``
is ``min over S of angle(Pᵀ T S)``, with ``angle(M) = arccos((tr M − 1) / 2)``. Samples of
different phases use their own groups: the groups are stacked in a :class:`SymmetryTable`
(padded with the identity, which changes no minimum) and each sample names its row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from stemkit.physics.symmetry import PointGroup

ACOS_EPS = 1e-6


class SymmetryTable:
    """The proper rotations of several point groups, stacked ``(n_groups, G, 3, 3)``.

    Parameters
    ----------
    groups
        One :class:`~stemkit.physics.symmetry.PointGroup` per phase, in phase order.
    """

    def __init__(self, groups: Sequence[PointGroup]) -> None:
        if not groups:
            raise ValueError("a SymmetryTable needs at least one point group")
        order = max(g.order for g in groups)
        padded = [np.concatenate([g.rotations, np.repeat(np.eye(3)[None], order - g.order, 0)]) for g in groups]
        self.rotations = torch.as_tensor(np.stack(padded), dtype=torch.float32)
        self.names = [g.name for g in groups]

    def to(self, device: torch.device | str) -> SymmetryTable:
        """Move the table to ``device`` (in place) and return it."""
        self.rotations = self.rotations.to(device)
        return self


def symmetric_geodesic(
    predicted: torch.Tensor, true: torch.Tensor, table: SymmetryTable, phase: torch.Tensor | None = None
) -> torch.Tensor:
    """Angle in radians between predicted and true orientations, minimised over the true phase's symmetry.

    Parameters
    ----------
    predicted, true
        Rotation matrices ``(B, 3, 3)`` (crystal → lab, DESIGN.md).
    table
        The point groups of the phases.
    phase
        ``(B,)`` index of each sample's phase in ``table``; default: all phase 0.

    Returns
    -------
    torch.Tensor
        ``(B,)`` angles in radians, differentiable with respect to ``predicted``.

    Notes
    -----
    The arccos is evaluated on ``cos θ`` clamped to ``[-1 + ε, 1 − ε]`` (ε = 1e-6) so that
    its gradient stays finite at θ = 0 and 180°; the angle is then accurate to ~1e-3 rad
    near those ends, which is far below any orientation error a model makes.
    """
    if phase is None:
        phase = torch.zeros(predicted.shape[0], dtype=torch.long, device=predicted.device)
    symmetry = table.rotations.to(predicted.device, predicted.dtype)  # (n_groups, G, 3, 3)
    n_groups, order = symmetry.shape[:2]
    relative = predicted.transpose(-1, -2) @ true  # Pᵀ T
    # tr(Pᵀ T S) = Σ_ij (Pᵀ T)_ij S_ji: one product with every operator of every phase, then each sample's phase
    traces = relative.reshape(-1, 9) @ symmetry.transpose(-1, -2).reshape(n_groups * order, 9).T
    traces = traces.reshape(-1, n_groups, order)[torch.arange(relative.shape[0], device=phase.device), phase]
    cos = ((traces.max(dim=1).values - 1.0) / 2.0).clamp(-1 + ACOS_EPS, 1 - ACOS_EPS)
    return torch.arccos(cos)


def multiple_choice_loss(
    outputs: dict[str, torch.Tensor],
    true: torch.Tensor,
    phase: torch.Tensor,
    table: SymmetryTable,
    *,
    orientation_weight: float = 0.9,
    phase_weight: float = 0.1,
    hypothesis_weight: float = 0.1,
    relaxation: float = 0.05,
) -> dict[str, torch.Tensor]:
    """The training loss of the rotation hypotheses, their weights and the phase, summed over the batch.

    Multiple-choice learning: each sample's hypotheses are scored by :func:`symmetric_geodesic`
    against the truth (in the true phase's point group); the closest one (the winner) takes
    the loss, the others a small share ``relaxation`` (which keeps every hypothesis alive),
    and the hypothesis logits learn by cross-entropy which one won. Where a pattern cannot
    tell two orientations apart (a 180° turn about the beam, a pseudo-symmetric twin), the
    hypotheses settle on both and their weights on how often each is right.

    ``total = orientation_weight · (geodesic + hypothesis_weight · CE_hypothesis) + phase_weight · CE_phase``,
    each term summed (not averaged) over the samples, so that a batch processed in chunks
    adds up to the same number; divide by the batch size for the mean.

    Parameters
    ----------
    outputs
        :class:`~stemkit.orientation.model.OrientationTransformer` outputs: ``rotations``
        ``(B, K, 3, 3)``, ``hypothesis_logits`` ``(B, K)``, ``phase_logits`` ``(B, n_phases)``.
    true
        True rotations ``(B, 3, 3)``.
    phase
        True phase indices ``(B,)``.
    table
        The phases' point groups.

    Returns
    -------
    dict
        ``total``, ``orientation`` (geodesic part), ``hypothesis`` and ``phase`` (cross-entropies),
        all summed over the batch, and ``angles`` ``(B, K)`` (radians, detached).
    """
    rotations = outputs["rotations"]
    n, k = rotations.shape[:2]
    angles = symmetric_geodesic(rotations.reshape(n * k, 3, 3), true.repeat_interleave(k, dim=0), table,
                                phase.repeat_interleave(k)).reshape(n, k)
    winner = angles.detach().argmin(dim=1)
    if k == 1:
        geodesic = angles[:, 0].sum()
    else:
        best = angles.gather(1, winner[:, None])[:, 0]
        others = (angles.sum(dim=1) - best) / (k - 1)
        geodesic = ((1.0 - relaxation) * best + relaxation * others).sum()
    hypothesis = nn.functional.cross_entropy(outputs["hypothesis_logits"], winner, reduction="sum")
    phase_loss = nn.functional.cross_entropy(outputs["phase_logits"], phase, reduction="sum")
    total = orientation_weight * (geodesic + hypothesis_weight * hypothesis) + phase_weight * phase_loss
    return {"total": total, "orientation": geodesic, "hypothesis": hypothesis, "phase": phase_loss,
            "angles": angles.detach()}
