"""The CC-ST-AE network (Qin, Agar and Tran, 2023), small enough to train on a CPU.

- **encoder**: three 3×3 convolutions with max-pooling over the pattern shrunk to
  ``encoder_size`` pixels (after a blur, so no disk is lost), then a dense layer;
- **dictionary head**: logits over ``n_bases`` learned base patterns, used hard (top-1)
  in the forward pass with the softmax gradient in the backward pass (straight-through);
- **bounded affine head**: scale x/y and one symmetric shear within ``±max_strain``,
  rotation within ``±max_rotation`` degrees, translation within ``±max_shift_px``
  (``tanh`` bounds), assembled as ``A = R(θ) [[1 + sx, s], [s, 1 + sy]]``;
- **base decoder**: the dictionary itself, ``n_bases`` images at the prepared size.

The affine maps base-frame points to pattern points (:mod:`stemkit.strain.warp`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import nn

from stemkit.strain.patterns import gaussian_blur

ENCODER_SIZE = 48
ENCODER_BLUR_FRACTION = 0.5  # blur σ (px) per unit of shrink factor


class CCSTAENet(nn.Module):
    """Encoder, dictionary head, bounded affine head and base decoder (module docstring)."""

    def __init__(self, size: int, n_bases: int, *, max_strain: float = 0.15, max_rotation: float = 30.0,
                 max_shift_px: float = 3.0, encoder_size: int = ENCODER_SIZE, width: int = 32) -> None:
        super().__init__()
        self.size, self.encoder_size = size, encoder_size
        self.max_strain, self.max_rotation, self.max_shift_px = max_strain, max_rotation, max_shift_px
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width // 2, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(width * (encoder_size // 8) ** 2, 128), nn.ReLU(),
        )
        self.classify = nn.Linear(128, n_bases)
        self.affine = nn.Linear(128, 6)
        nn.init.zeros_(self.affine.weight)  # start at the identity warp
        nn.init.zeros_(self.affine.bias)
        self.bases = nn.Parameter(torch.zeros(n_bases, size, size))

    def shrink(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 1, e, e)`` encoder input: blurred, area-averaged, standardised per pattern."""
        factor = self.size / self.encoder_size
        small = nnf.adaptive_avg_pool2d(gaussian_blur(images, ENCODER_BLUR_FRACTION * factor)[:, None],
                                        self.encoder_size)
        mean = small.mean(dim=(2, 3), keepdim=True)
        std = small.std(dim=(2, 3), keepdim=True).clamp_min(1e-8)
        return (small - mean) / std

    def forward(self, small: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits ``(n, n_bases)`` and the bounded affine ``A`` ``(n, 2, 2)``, ``t`` ``(n, 2)`` (pixels)
        of encoder inputs ``small`` (:meth:`shrink`)."""
        features = self.encoder(small)
        matrix, shift = self.bounded_affine(self.affine(features))
        return self.classify(features), matrix, shift

    def bounded_affine(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A = R(θ) S`` and ``t`` from the six unbounded head outputs."""
        bounded = torch.tanh(raw)
        sx, sy, shear = (self.max_strain * bounded[:, i] for i in range(3))
        theta = math.radians(self.max_rotation) * bounded[:, 3]
        shift = self.max_shift_px * bounded[:, 4:6]
        c, s = torch.cos(theta), torch.sin(theta)
        rotation = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        stretch = torch.stack([torch.stack([1 + sx, shear], -1), torch.stack([shear, 1 + sy], -1)], -2)
        return rotation @ stretch, shift


def straight_through(logits: torch.Tensor) -> torch.Tensor:
    """Hard top-1 one-hot in the forward pass, the softmax's gradient in the backward pass."""
    soft = torch.softmax(logits, dim=-1)
    hard = nnf.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()
