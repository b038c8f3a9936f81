"""The cycle-consistent loss of the CC-ST-AE, inside the annular mask, with its regularisers.

For a pattern ``X``, its (straight-through) base ``T`` and affine ``(A, t)``:

- forward: ``X`` warped into the base frame, ``X(A u + t)``, must match ``T(u)``;
- backward: the base warped back, ``T(A⁻¹ (x − t))``, must match ``X(x)``;

each as the mean squared difference of the two sides standardised over the mask (so the
pattern's intensity scale does not matter: one minus the normalised correlation, times
two). Regularisers: ``gauge`` pulls the batch-mean warp to the identity (the base frame
is otherwise free to drift), ``balance`` rewards using every base (entropy of the mean
assignment).
"""

from __future__ import annotations

import torch

from stemkit.strain.warp import apply, apply_inverse, sample


def _standardise(values: torch.Tensor) -> torch.Tensor:
    mean = values.mean(dim=-1, keepdim=True)
    std = values.std(dim=-1, keepdim=True).clamp_min(1e-8)
    return (values - mean) / std


def cycle_loss(images: torch.Tensor, bases: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor,
               points: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Forward plus backward term per pattern, ``(n,)``.

    Parameters
    ----------
    images, bases
        ``(n, S, S)`` patterns and the base of each.
    matrix, shift
        ``(n, 2, 2)``, ``(n, 2)`` affines (base frame → pattern).
    points, flat
        Mask points ``(M, 2)`` and their flat indices (:func:`stemkit.strain.warp.mask_points`).
    """
    n = len(images)
    warped = sample(images[:, None], apply(matrix, shift, points))[:, 0]
    base_fixed = bases.reshape(n, -1)[:, flat]
    forward = (_standardise(warped) - _standardise(base_fixed)).pow(2).mean(-1)
    returned = sample(bases[:, None], apply_inverse(matrix, shift, points))[:, 0]
    image_fixed = images.reshape(n, -1)[:, flat]
    backward = (_standardise(returned) - _standardise(image_fixed)).pow(2).mean(-1)
    return forward + backward


def regularisers(matrix: torch.Tensor, shift: torch.Tensor, soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``gauge`` (batch-mean warp away from the identity) and ``balance`` (negative entropy of base use)."""
    identity = torch.eye(2, dtype=matrix.dtype, device=matrix.device)
    gauge = (matrix.mean(0) - identity).pow(2).sum() + 0.01 * shift.mean(0).pow(2).sum()
    usage = soft.mean(0).clamp_min(1e-8)
    balance = (usage * usage.log()).sum()
    return gauge, balance
