"""Affine warps of prepared patterns about the direct beam, and their Gauss-Newton refinement.

Coordinates are pixels of the prepared image relative to its centre pixel (the direct
beam): ``x`` along columns (+kx), ``y`` along rows (+ky). An affine ``(A, t)`` maps a
point ``u`` of the base frame to ``A u + t`` in the pattern, so a base reflection at
``g`` appears in the pattern at ``A g`` — ``A`` is the reciprocal map of
:mod:`stemkit.strain.polar`.

:func:`refine` fits each pattern separately, the base fixed, by Gauss-Newton on the
backward term of the CC-ST-AE's cycle loss: the base warped onto the pattern must match it,
``T(A⁻¹ (x − t)) ≈ g X(x) + b`` over the annular mask, with a gain ``g`` and offset ``b``.
Only the smooth base is interpolated, never the noisy pattern, so the template can be
upsampled once per level (band-limited, :func:`fourier_upsample`, ``upsample`` ×) and then
sampled bilinearly: bilinear sampling of the base at its own pixel pitch pulls every spot
towards the grid (pixel locking) and under-read strain by 2-4 % (slope 0.96-0.98 against
the truth on the benchmark films); a bicubic upsampling has a bias of its own (slope 0.98
at 8× on noiseless synthetic spots, where the Fourier one gives 1.000 from 2× on). The forward term (the pattern warped into the
base frame), which the network's loss also uses, carries the same information (its
estimates matched the backward term's) but must interpolate the noisy pattern on its own
pixel grid, which no upsampling can fix; the refinement leaves it out. The Jacobian is analytic (template gradients by central differences), so
each step is one ``grid_sample`` per base and an 8×8 solve per pattern — sub-pixel
precision from the smooth warp. Levels of Gaussian blur of pattern and base (coarse to
fine) widen the basin first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf

from stemkit.strain.patterns import gaussian_blur

N_PARAMS = 8  # A00, A01, A10, A11, tx, ty, gain, offset
MAX_MATRIX_STEP = 0.02
MAX_SHIFT_STEP = 1.0
DAMPING = 1e-3
CROP_MARGIN_PX = 12
UPSAMPLE = 2


def mask_points(mask: np.ndarray, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, 2)`` float points ``(x, y)`` of the mask relative to the centre, and its flat indices."""
    size = mask.shape[0]
    rows, cols = np.nonzero(mask)
    points = np.stack([cols - size // 2, rows - size // 2], axis=1).astype(np.float32)
    flat = rows * size + cols
    return torch.as_tensor(points, device=device), torch.as_tensor(flat, device=device)


def sample(maps: torch.Tensor, points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Values of ``maps`` ``(n, C, S, S)`` at ``points`` ``(n, M, 2)`` (pixels from the centre): ``(n, C, M)``."""
    size = maps.shape[-1]
    grid = (points + size // 2) * (2.0 / (size - 1)) - 1.0
    out = nnf.grid_sample(maps, grid[:, None], mode=mode, padding_mode="zeros", align_corners=True)
    return out[:, :, 0]


def with_gradients(images: torch.Tensor) -> torch.Tensor:
    """``(n, 3, S, S)``: the images and their x and y derivatives (central differences)."""
    padded = nnf.pad(images[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return torch.stack([images, dx, dy], dim=1)


def apply(matrix: torch.Tensor, shift: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``A u + t`` for ``u`` ``(M, 2)`` or ``(n, M, 2)``: ``(n, M, 2)``."""
    return torch.einsum("nij,...mj->nmi", matrix, points) + shift[:, None]


def apply_inverse(matrix: torch.Tensor, shift: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ (x − t)``: ``(n, M, 2)``."""
    return torch.einsum("nij,nmj->nmi", torch.linalg.inv(matrix), points[None] - shift[:, None])


def refine(images: torch.Tensor, bases: torch.Tensor, labels: torch.Tensor, mask: np.ndarray,
           matrix: torch.Tensor, shift: torch.Tensor, *, levels: tuple[float, ...] = (2.5, 1.25, 0.0),
           iterations: int = 3, upsample: int = UPSAMPLE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine the affine of each image against its base by Gauss-Newton (module docstring).

    Parameters
    ----------
    images
        ``(n, S, S)`` prepared patterns.
    bases, labels
        ``(K, S, S)`` base patterns and the index of the base of each image.
    mask
        ``(S, S)`` annular mask.
    matrix, shift
        ``(n, 2, 2)`` and ``(n, 2)`` starting affines.
    levels
        Gaussian blur (px) of images and bases at each coarse-to-fine level.
    iterations
        Gauss-Newton steps per level.
    upsample
        Factor by which the bases are upsampled (bicubic) before they are sampled bilinearly.

    Returns
    -------
    matrix, shift, residual
        Refined affines and the RMS residual per image (relative to the RMS of the base over
        the mask).
    """
    images, bases, mask = _crop_to_mask(images, bases, mask)
    points, flat = mask_points(mask, images.device)
    matrix, shift = matrix.clone(), shift.clone()
    n = len(images)
    gain = torch.ones(n, device=images.device)
    offset = torch.zeros(n, device=images.device)
    residual = torch.full((n,), float("nan"), device=images.device)
    for sigma in levels:
        x_fixed = gaussian_blur(images, sigma).reshape(n, -1)[:, flat]
        blurred = gaussian_blur(bases, sigma)
        t_maps = template_maps(blurred, upsample)
        for _ in range(iterations):
            hessian, gradient, _ = _backward_terms(x_fixed, t_maps, labels, points, matrix, shift, gain, offset,
                                                   upsample)
            step = _damped_step(hessian, gradient)
            matrix = matrix + step[:, :4].reshape(n, 2, 2).clamp(-MAX_MATRIX_STEP, MAX_MATRIX_STEP)
            shift = shift + step[:, 4:6].clamp(-MAX_SHIFT_STEP, MAX_SHIFT_STEP)
            gain = gain + step[:, 6]
            offset = offset + step[:, 7]
        _, _, res = _backward_terms(x_fixed, t_maps, labels, points, matrix, shift, gain, offset, upsample)
        t_fixed = blurred.reshape(len(bases), -1)[:, flat][labels]
        residual = res.pow(2).mean(1).sqrt() / t_fixed.pow(2).mean(1).sqrt().clamp_min(1e-12)
    return matrix, shift, residual


def _crop_to_mask(images: torch.Tensor, bases: torch.Tensor, mask: np.ndarray):
    """Images, bases and mask cut to the centred square that holds the mask and a margin for the warps."""
    size = mask.shape[0]
    rows, cols = np.nonzero(mask)
    reach = int(np.max(np.abs(np.concatenate([rows, cols]) - size // 2))) + CROP_MARGIN_PX
    if 2 * reach + 1 >= size:
        return images, bases, mask
    part = slice(size // 2 - reach, size // 2 + reach + 1)
    return images[:, part, part], bases[:, part, part], mask[part, part]


def fourier_upsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``(n, u (S − 1) + 1, u (S − 1) + 1)``: band-limited (sinc) interpolation of ``(n, S, S)`` images on a grid
    ``factor`` times finer, the original pixel centres kept (zero-padded spectrum)."""
    n, size, _ = images.shape
    spectrum = torch.fft.fft2(images.double())
    big = factor * size
    low = (size + 1) // 2  # frequencies 0 … low − 1 are non-negative, the rest negative
    high = size - low
    padded = spectrum.new_zeros((n, big, big))
    for rows_in, rows_out in ((slice(0, low), slice(0, low)), (slice(low, size), slice(big - high, big))):
        padded[:, rows_out, :low] = spectrum[:, rows_in, :low]
        padded[:, rows_out, big - high:] = spectrum[:, rows_in, low:]
    fine = torch.fft.ifft2(padded).real * factor**2
    keep = factor * (size - 1) + 1
    return fine[:, :keep, :keep].to(images.dtype)


def template_maps(bases: torch.Tensor, upsample: int) -> torch.Tensor:
    """``(K, 3, S', S')``: the bases upsampled (:func:`fourier_upsample`, ``S' = u (S − 1) + 1``) and their
    x and y derivatives per original pixel."""
    if upsample > 1:
        bases = fourier_upsample(bases, upsample)
    maps = with_gradients(bases)
    maps[:, 1:] *= upsample
    return maps


def _sample_templates(t_maps: torch.Tensor, labels: torch.Tensor, points: torch.Tensor,
                      upsample: int) -> torch.Tensor:
    """``(n, 3, M)``: each image's template maps at its ``points`` ``(n, M, 2)`` (original pixels from the
    centre), one ``grid_sample`` per base over all of its images' points (no per-image copy of the maps)."""
    n, m = points.shape[:2]
    size = (t_maps.shape[-1] - 1) // upsample + 1  # the bases' own side; align_corners keeps pixel centres
    grid = (points + size // 2) * (2.0 / (size - 1)) - 1.0
    out = points.new_empty((n, 3, m))
    for k in torch.unique(labels).tolist():
        chosen = labels == k
        values = nnf.grid_sample(t_maps[k:k + 1], grid[chosen].reshape(1, 1, -1, 2), mode="bilinear",
                                 padding_mode="zeros", align_corners=True)[0, :, 0]  # (3, n_k M)
        out[chosen] = values.reshape(3, -1, m).transpose(0, 1)
    return out


def _backward_terms(x_fixed, t_maps, labels, points, matrix, shift, gain, offset, upsample):
    """Normal equations ``JᵀJ`` ``(n, 8, 8)`` and ``Jᵀr`` ``(n, 8)`` of the backward term, and its residuals ``(n, M)``.

    The Jacobian rows are built channel-first (``(n, 8, M)``), so that the products are batched
    matrix multiplications rather than strided reductions.
    """
    n, m = x_fixed.shape
    back_points = apply_inverse(matrix, shift, points)
    tv, tgx, tgy = _sample_templates(t_maps, labels, back_points, upsample).unbind(1)
    inverse = torch.linalg.inv(matrix)
    wx = inverse[:, 0, 0, None] * tgx + inverse[:, 1, 0, None] * tgy  # (A⁻ᵀ ∇T)_x
    wy = inverse[:, 0, 1, None] * tgx + inverse[:, 1, 1, None] * tgy
    qx, qy = back_points[..., 0], back_points[..., 1]
    residual = tv - gain[:, None] * x_fixed - offset[:, None]
    jac = x_fixed.new_empty((n, N_PARAMS, m))
    jac[:, 0], jac[:, 1], jac[:, 2], jac[:, 3] = -wx * qx, -wx * qy, -wy * qx, -wy * qy
    jac[:, 4], jac[:, 5], jac[:, 6], jac[:, 7] = -wx, -wy, -x_fixed, -1.0
    hessian = torch.bmm(jac, jac.transpose(1, 2))
    gradient = torch.bmm(jac, residual[..., None])[..., 0]
    return hessian, gradient, residual


def _damped_step(hessian: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Levenberg-Marquardt step ``−(JᵀJ + λ diag)⁻¹ Jᵀ r`` per image; zero where it is not finite."""
    diagonal = torch.diagonal(hessian, dim1=1, dim2=2)
    hessian = hessian + torch.diag_embed(DAMPING * diagonal + 1e-9)
    step = -torch.linalg.solve(hessian.double(), gradient.double()[..., None])[..., 0].float()
    return torch.where(torch.isfinite(step), step, torch.zeros_like(step))
