"""A network's 9 outputs → a rotation matrix, by SVD orthogonalisation.

The special-orthogonal matrix nearest (in the Frobenius norm) to the 3×3 matrix M of the
outputs is ``R = U' V`` with ``M = U Σ V`` (V = Vᵀ of the SVD) and U' = U with its last
column multiplied by ``d = det(U V)``; it is continuous in M, which makes it a better
regression target than Euler angles or quaternions (Levinson et al., NeurIPS 2020).

Autograd through ``torch.linalg.svd`` differentiates U and V separately, with terms in
``1/(σᵢ² − σⱼ²)`` that are infinite when singular values coincide — as they do when M is
already a rotation, i.e. near convergence. The projection itself has the well-behaved
derivative ``∂L/∂M = U' [(X − Xᵀ) ⊘ (σ'ᵢ + σ'ⱼ)] V`` with ``X = U'ᵀ G Vᵀ`` and
``σ' = (σ₁, σ₂, d σ₃)``, which :class:`_SpecialOrthogonalProjection` implements.
"""

from __future__ import annotations

import torch


class _SpecialOrthogonalProjection(torch.autograd.Function):
    """``M ↦ argmin over R in SO(3) of ‖R − M‖``, with the analytic backward pass."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor) -> torch.Tensor:
        u, s, vh = torch.linalg.svd(matrix)
        d = torch.sign(torch.det(u @ vh))
        d = torch.where(d == 0, torch.ones_like(d), d)
        flip = torch.ones_like(s)
        flip[..., 2] = d
        u_special = u * flip[..., None, :]
        s_special = s * flip
        ctx.save_for_backward(u_special, s_special, vh)
        return u_special @ vh

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        u, s, vh = ctx.saved_tensors
        x = u.transpose(-1, -2) @ grad @ vh.transpose(-1, -2)
        denominator = (s[..., :, None] + s[..., None, :]).clamp_min(1e-9)
        return u @ ((x - x.transpose(-1, -2)) / denominator) @ vh


def rotation_from_9d(outputs: torch.Tensor) -> torch.Tensor:
    """Project ``(..., 9)`` outputs onto proper rotations ``(..., 3, 3)``.

    Parameters
    ----------
    outputs
        Raw network outputs, the last dimension read row by row as a 3×3 matrix.

    Returns
    -------
    torch.Tensor
        Rotation matrices (orthonormal, determinant +1), differentiable everywhere except on
        the measure-zero set where the projection itself is not unique.
    """
    if outputs.shape[-1] != 9:
        raise ValueError(f"rotation_from_9d needs 9 outputs in the last dimension; got shape {tuple(outputs.shape)}")
    matrix = outputs.reshape(-1, 3, 3)
    return _SpecialOrthogonalProjection.apply(matrix).reshape(*outputs.shape[:-1], 3, 3)
