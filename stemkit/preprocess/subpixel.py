"""Sub-pixel disk positions: a least-squares fit of the probe template at sub-pixel shifts.

The model of the background-subtracted pixels ``e`` in a window around a disk is
``a · T(p − c)``: the probe template ``T`` at a sub-pixel centre ``c`` with amplitude ``a``.
For a given ``c`` the best ``a`` is a projection, so the least-squares centre maximises the
correlation ``⟨e, T_c⟩ / ‖T_c‖``. Instead of interpolating the pattern (which locks
positions to the pixel grid), the template is shifted: a bank holds ``T`` drawn at every
shift of a fine grid (``1/steps`` px, within ``span`` px of the window's centre pixel)
from its radial profile, which every pixel of the measured probe samples at its own
distance from the centre (interpolating the sampled image instead, e.g. by Fourier
shifts, aliases the disk's edge into errors of a few hundredths of a pixel). The bank
spans a low-dimensional space, so its principal components turn the correlations with all
shifts into two small matrix products per batch of windows; the centre is the best grid
shift, refined by a parabola through its neighbours in each axis.

Under Poisson noise dominated by the background this is the maximum-likelihood estimate,
whose error approaches the Cramér–Rao bound; a centroid, which also weighs the flat top of
the disk (noise without positional information), does not. Below a radius of about 2.5 px the
profile is too coarsely sampled for this (errors of 0.01 px at 2 px, several hundredths
below), and the centroid is the better estimate; :func:`find_peaks` then uses it.
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
                 steps: int = BANK_STEPS, span: float = BANK_SPAN, design: torch.Tensor | None = None,
                 tolerance: float = BANK_TOLERANCE):
        self.half, self.step = int(half), 1.0 / steps
        self.shifts = np.arange(-round(span * steps), round(span * steps) + 1) / steps
        bank = _radial_bank(template, self.half, radius_px + 2.0, self.shifts)  # (Q, K), each of unit sum
        norms = np.linalg.norm(bank, axis=1)
        basis, coefficients = _principal_components(bank / norms[:, None], tolerance)
        basis *= np.any(bank != 0, axis=0)[:, None]  # no weight, however small, beyond the bank's reach
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.basis, self.coefficients, self.norms = as_tensor(basis), as_tensor(coefficients.T), as_tensor(norms)
        # the whole-pixel shifts alone (integer=True): a product with their columns only
        whole = np.flatnonzero(np.isclose(self.shifts, np.round(self.shifts)))
        self.whole_shifts = self.shifts[whole]
        whole_flat = (whole[:, None] * len(self.shifts) + whole[None, :]).ravel()
        self.whole_coefficients, self.whole_norms = self.coefficients[:, whole_flat], self.norms[whole_flat]
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
        shifts, coefficients, norms = (self.whole_shifts, self.whole_coefficients, self.whole_norms) if integer else \
            (self.shifts, self.coefficients, self.norms)
        g = len(shifts)
        correlation = (components @ coefficients).reshape(-1, g, g)
        best = _argmax_rows(correlation.reshape(len(components), -1))
        i, j = best // g, best % g
        on_edge = (i == 0) | (i == g - 1) | (j == 0) | (j == g - 1)
        shifts = torch.as_tensor(shifts, dtype=torch.float32, device=components.device)
        offset = torch.stack([shifts[i], shifts[j]], dim=1)
        if not integer:
            offset = offset + self.step * _vertex_offsets(correlation, i.clamp(1, g - 2), j.clamp(1, g - 2))
        weighted = correlation.reshape(len(components), -1).gather(1, best[:, None])[:, 0] * norms[best]
        return offset, weighted, on_edge


def _argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """Index of the largest value of each row (the first of equals), by numpy on the CPU (3× faster there)."""
    if x.device.type == "cpu":
        return torch.from_numpy(x.numpy().argmax(axis=1))
    return x.argmax(dim=1)


def _vertex_offsets(correlation: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``(m, 2)``: the vertex of the parabola through the best grid value and its two neighbours, per axis."""
    g = correlation.shape[2]
    centre = (i * g + j)[:, None]
    steps = torch.tensor([0, -g, g, -1, 1], device=i.device)
    centre, up, down, left, right = correlation.reshape(len(i), -1).gather(1, centre + steps).unbind(1)  # one read
    out = []
    for before, after in ((up, down), (left, right)):
        curvature = before - 2 * centre + after
        ok = curvature < 0
        out.append(torch.where(ok, 0.5 * (before - after) / torch.where(ok, curvature, -1.0), 0.0).clamp(-0.5, 0.5))
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


def radial_profile(template: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """The template's mean value against the distance from its centroid: ``(radii, values)``, up to ``cutoff``.

    Every pixel within ``cutoff`` of the centroid samples the profile at its own distance,
    so the profile is known at many more radii than the pixel grid has steps: a shifted
    template drawn from it does not suffer the aliasing of interpolating the image itself.
    """
    rows, cols = np.indices(template.shape)
    weight = np.clip(template, 0, None)
    centroid = np.array([(weight * rows).sum(), (weight * cols).sum()]) / weight.sum()
    distance = np.hypot(rows - centroid[0], cols - centroid[1]).ravel()
    inside = distance <= cutoff
    radii, inverse = np.unique(np.round(distance[inside], 6), return_inverse=True)
    values = np.bincount(inverse, weights=template.ravel()[inside]) / np.bincount(inverse)
    return radii, values


def _radial_bank(template: np.ndarray, half: int, cutoff: float, shifts: np.ndarray) -> np.ndarray:
    """``(len(shifts)², (2 half + 1)²)``: the template's radial profile drawn at every pair of ``shifts``
    from the window's centre pixel (zero beyond ``cutoff``), flattened, each of unit sum."""
    radii, values = radial_profile(template, cutoff)
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1].reshape(2, 1, 1, -1)
    qy, qx = np.meshgrid(shifts, shifts, indexing="ij")
    distance = np.hypot(dy - qy[..., None], dx - qx[..., None])
    bank = np.where(distance <= cutoff, np.interp(distance, radii, values, right=0.0), 0.0)
    bank = bank.reshape(len(shifts) ** 2, -1)
    return bank / bank.sum(axis=1, keepdims=True)
