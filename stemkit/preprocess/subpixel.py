"""Sub-pixel disk positions: a least-squares fit of the probe template at sub-pixel shifts.

The model of the background-subtracted pixels ``e`` in a window around a disk is
``a · T(p − c)``: the probe template ``T`` at a sub-pixel centre ``c`` with amplitude ``a``.
For a given ``c`` the best ``a`` is a projection, so the least-squares centre maximises the
correlation ``⟨e, T_c⟩ / ‖T_c‖``. Instead of interpolating the pattern (which locks
positions to the pixel grid), the template is shifted: a bank holds ``T`` resampled by
band-limited (Fourier) interpolation at every shift of a fine grid (``1/steps`` px, within
``span`` px of the window's centre pixel). The bank spans a low-dimensional space, so its
principal components turn the correlations with all shifts into two small matrix products
per batch of windows; the centre is the best grid shift, refined by a parabola through its
neighbours in each axis.

Under Poisson noise dominated by the background this is the maximum-likelihood estimate,
whose error approaches the Cramér–Rao bound; a centroid, which also weighs the flat top of
the disk (noise without positional information), does not.
"""

from __future__ import annotations

import numpy as np
import torch

BANK_STEPS = 4
BANK_SPAN = 1.0
BANK_TOLERANCE = 1e-5  # fraction of the bank's energy the principal components may leave out



class TemplateFit:
    """Correlate windows of many patterns with the template at every sub-pixel shift at once.

    Parameters
    ----------
    template
        Full-frame probe template, centred near ``shape // 2`` (from :func:`probe_template`).
    radius_px
        Disk radius in pixels; the template is cut off at ``radius_px + 2``.
    half
        The window is ``2 half + 1`` px square, centred on a pixel.
    device
        Torch device of the bank.
    steps, span
        Bank shifts: multiples of ``1/steps`` px up to ``span`` px in each axis.
    design
        ``(K, 3)`` columns 1, row and column offset of the window pixels, for fitting windows
        whose background plane is given rather than subtracted.
    """

    def __init__(self, template: np.ndarray, radius_px: float, half: int, device: torch.device,
                 steps: int = BANK_STEPS, span: float = BANK_SPAN, design: torch.Tensor | None = None):
        self.half, self.step = int(half), 1.0 / steps
        small = _centred_crop(template, self.half, radius_px + 2.0)
        self.shifts = np.arange(-round(span * steps), round(span * steps) + 1) / steps
        bank = _shifted_bank(small, self.shifts, radius_px + 2.5 + span)  # (Q, K), each of unit sum
        norms = np.linalg.norm(bank, axis=1)
        basis, coefficients = _principal_components(bank / norms[:, None], BANK_TOLERANCE)
        basis *= np.any(bank != 0, axis=0)[:, None]  # no weight, however small, beyond the bank's reach
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.basis, self.coefficients, self.norms = as_tensor(basis), as_tensor(coefficients.T), as_tensor(norms)
        self.n_eff = float(1.0 / np.mean(norms**2))  # effective counts per unit of template-weighted mean
        self.design_basis = None if design is None else design.T @ self.basis  # (3, L): a plane's components

    def fit(self, windows: torch.Tensor, integer: bool = False):
        """Best shift of the template in each window.

        Parameters
        ----------
        windows
            ``(m, (2 half + 1)²)`` background-subtracted pixel values.
        integer
            Only whole-pixel shifts (no sub-pixel refinement).

        Returns
        -------
        offset
            ``(m, 2)`` centre (rows, columns) relative to the window's centre pixel.
        weighted
            ``(m,)`` the template-weighted mean of the window at that shift, ``⟨e, T_c⟩`` with ``ΣT = 1``.
        on_edge
            ``(m,)`` True where the best shift is the largest in the bank: the centre may lie further out.
        """
        return self.fit_components(windows @ self.basis, integer)

    def fit_components(self, components: torch.Tensor, integer: bool = False):
        """:meth:`fit` from the windows' ``(m, L)`` components in :attr:`basis` (see there)."""
        g = len(self.shifts)
        correlation = (components @ self.coefficients).reshape(-1, g, g)
        if integer:
            whole = torch.zeros(g, dtype=torch.bool, device=components.device)
            whole[:: round(1 / self.step)] = True
            correlation = torch.where(whole[:, None] & whole[None, :], correlation, -torch.inf)
        best = correlation.reshape(len(components), -1).argmax(dim=1)
        i, j = best // g, best % g
        on_edge = (i == 0) | (i == g - 1) | (j == 0) | (j == g - 1)
        shifts = torch.as_tensor(self.shifts, dtype=torch.float32, device=components.device)
        offset = torch.stack([shifts[i], shifts[j]], dim=1)
        if not integer:
            offset = offset + self.step * _vertex_offsets(correlation, i.clamp(1, g - 2), j.clamp(1, g - 2))
        rows = torch.arange(len(components), device=components.device)
        weighted = correlation[rows, i, j] * self.norms[best]
        return offset, weighted, on_edge


def _vertex_offsets(correlation: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``(m, 2)``: the vertex of the parabola through the best grid value and its two neighbours, per axis."""
    rows = torch.arange(len(i), device=i.device)
    centre = correlation[rows, i, j]
    out = []
    for left, right in ((correlation[rows, i - 1, j], correlation[rows, i + 1, j]),
                        (correlation[rows, i, j - 1], correlation[rows, i, j + 1])):
        curvature = left - 2 * centre + right
        ok = curvature < 0
        out.append(torch.where(ok, 0.5 * (left - right) / torch.where(ok, curvature, -1.0), 0.0).clamp(-0.5, 0.5))
    return torch.stack(out, dim=1)


def _principal_components(bank: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis ``(K, L)`` of the bank's rows, leaving out at most ``tolerance`` of its energy,
    and the rows' coefficients ``(Q, L)`` in it.

    From the eigenvectors of the small ``Q × Q`` Gram matrix (a full SVD of the bank
    takes far longer where the BLAS threads compete with other work).
    """
    bank_t = torch.as_tensor(bank, dtype=torch.float64)
    eigenvalues, vectors = (a.numpy() for a in torch.linalg.eigh(bank_t @ bank_t.T))
    eigenvalues, vectors = eigenvalues[::-1].clip(0), vectors[:, ::-1]
    left_out = 1.0 - np.cumsum(eigenvalues) / eigenvalues.sum()  # left_out[l]: energy beyond the first l + 1
    keep = int(np.argmax(left_out < tolerance)) + 1 if np.any(left_out < tolerance) else len(eigenvalues)
    basis = bank.T @ vectors[:, :keep] / np.sqrt(eigenvalues[:keep])
    return basis, bank @ basis


def _shifted_bank(small: np.ndarray, shifts: np.ndarray, reach: float) -> np.ndarray:
    """``(len(shifts)², K)``: the window template moved by every pair of ``shifts``, flattened, each of unit sum.

    Band-limited shifts are separable, so each is two small matrix products with 1-D shift
    matrices (cut from the shift of a 3× longer, zero-padded line, so nothing wraps around).
    The interpolation rings (a sampled disk is not band-limited); beyond ``reach`` px from
    the window's centre the ringing is cut, or a bright neighbour there would leak in.
    """
    size = small.shape[0]
    shift_1d = _shift_matrices(size, shifts)  # (G, size, size)
    moved = (shift_1d @ small)[:, None] @ shift_1d.transpose(0, 2, 1)[None]  # rows by a, columns by b
    dy, dx = np.indices((size, size)) - size // 2
    bank = (moved * (np.hypot(dy, dx) <= reach)).reshape(len(shifts) ** 2, -1)
    return bank / bank.sum(axis=1, keepdims=True)


def _shift_matrices(size: int, shifts: np.ndarray) -> np.ndarray:
    """``(len(shifts), size, size)``: ``M @ v`` moves a line ``v`` of ``size`` samples by each shift (band-limited)."""
    n = 3 * size
    k = np.fft.fftfreq(n)
    phase = np.exp(-2j * np.pi * k[None, :] * shifts[:, None])  # (G, n)
    dft = np.fft.fft(np.eye(n), axis=0)  # column j: the spectrum of a unit sample at j
    full = np.fft.ifft(phase[:, :, None] * dft[None], axis=1).real  # (G, n, n): column j moved
    return full[:, size : 2 * size, size : 2 * size]


def _centred_crop(template: np.ndarray, half: int, cutoff: float) -> np.ndarray:
    """The template's ``(2 half + 1)²`` neighbourhood of its centroid, zero beyond ``cutoff`` px from it,
    shifted so that its centroid lies exactly on the middle pixel."""
    rows, cols = np.indices(template.shape)
    total = template.sum()
    centroid = np.array([(template * rows).sum(), (template * cols).sum()]) / total
    size = 2 * half + 1
    pad = 2 * size  # room for the Fourier shift without wrap-around
    start = np.round(centroid).astype(int) - half - pad // 2
    canvas = np.zeros((size + pad, size + pad))
    r0, c0 = max(start[0], 0), max(start[1], 0)
    r1, c1 = min(start[0] + size + pad, template.shape[0]), min(start[1] + size + pad, template.shape[1])
    canvas[r0 - start[0] : r1 - start[0], c0 - start[1] : c1 - start[1]] = template[r0:r1, c0:c1]
    middle = half + pad // 2
    shifted = _fourier_shift(canvas, middle - (centroid - start))
    crop = shifted[middle - half : middle + half + 1, middle - half : middle + half + 1]
    cy, cx = np.indices(crop.shape) - half
    return np.where(np.hypot(cy, cx) <= cutoff, crop, 0.0)


def _fourier_shift(image: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``image`` moved by ``shift`` (rows, columns) pixels with band-limited interpolation."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    phase = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(np.fft.fft2(image) * phase).real
