"""The orientation transformer: Bragg-disk tokens → rotation hypotheses and phase.

A small transformer encoder reads the tokens of :mod:`tokens` (no positional encoding:
a pattern's disks are a set), pools them by a masked mean, and feeds three heads:

- ``K`` rotation hypotheses, each 9 outputs projected onto SO(3) by
  :func:`rotation_from_9d`, and a weight logit per hypothesis. Kinematic patterns near a
  zone axis cannot tell an orientation from its 180°-about-the-beam twin or from
  pseudo-symmetric ones; with ``K = 2`` the model can give both and say how much it
  believes each, instead of averaging them into a wrong answer (trained with a
  winner-takes-all loss);
- phase logits, one per phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from stemkit.orientation.rotation_head import rotation_from_9d
from stemkit.orientation.tokens import FEATURES


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`OrientationTransformer` (stored with the weights)."""

    n_phases: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    feedforward: int = 128
    dropout: float = 0.0
    n_hypotheses: int = 2
    n_features: int = len(FEATURES)

    def to_dict(self) -> dict:
        """Plain values, for JSON."""
        return asdict(self)


class OrientationTransformer(nn.Module):
    """Tokens ``(B, T, F)`` with a mask ``(B, T)`` → rotations ``(B, K, 3, 3)``, hypothesis and phase logits."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        if config.n_phases < 1 or config.n_hypotheses < 1:
            raise ValueError(f"need at least one phase and one hypothesis; got {config}")
        self.config = config
        self.embed = nn.Sequential(nn.Linear(config.n_features, config.d_model), nn.GELU(), nn.Linear(config.d_model, config.d_model))
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.n_heads, config.feedforward, config.dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.rotation = nn.Linear(config.d_model, 9 * config.n_hypotheses)
        self.hypothesis = nn.Linear(config.d_model, config.n_hypotheses)
        self.phase = nn.Linear(config.d_model, config.n_phases)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model.

        Parameters
        ----------
        features
            ``(B, T, F)`` token features.
        mask
            ``(B, T)``, True for real tokens. A pattern with no token gets the pooled
            value 0 and so a fixed, uninformed prediction (callers flag such patterns).

        Returns
        -------
        dict
            ``rotations`` ``(B, K, 3, 3)``, ``hypothesis_logits`` ``(B, K)``, ``phase_logits`` ``(B, n_phases)``.
        """
        any_token = mask.any(dim=1, keepdim=True)
        attend = mask | ~any_token  # an empty pattern attends to its padding rather than to nothing
        hidden = self.encoder(self.embed(features), src_key_padding_mask=~attend)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = self.norm((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0))
        k = self.config.n_hypotheses
        rotations = rotation_from_9d(self.rotation(pooled).reshape(-1, k, 9))
        return {"rotations": rotations, "hypothesis_logits": self.hypothesis(pooled), "phase_logits": self.phase(pooled)}
