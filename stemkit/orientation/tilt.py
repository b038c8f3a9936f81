"""The last polish of each answer's tilt, against the brightness of its disks.

The refinement (:mod:`stemkit.orientation.refine`) fixes the tilt by pulling the reflections
that are bright for their structure factor to the Bragg condition (``s = 0``). That is the
right direction from afar, but not the right end point: where no reflection of the pattern is
exactly at the Bragg condition, the brightest ones sit at ``s`` of a few 0.01 1/Å, and pulling
them to zero tilts the answer by up to a degree or two (started at the truth, the refinement
drifted a median 0.67° on clean kinematic Cu patterns and 0.51° on the benchmark's dynamical
ones; benchmarks/RESULTS.md).

Here the chosen answer's tilt (its rotation about the two lab axes normal to the beam) is
searched on a grid, coarse then fine, for the tilt that best explains the disks' amplitudes
(``√I``) with a relrod of Lorentzian profile,

.. math:: a_i \\approx A\\,|F_i| \\,/\\, \\sqrt{1 + (s_i/γ)^2},

the scale ``A`` and width ``γ`` fitted for each tilt (``γ`` from a few values: it stands for the
thickness and, in dynamical patterns, the extinction), together with the disks' positions. The
Lorentzian's tails fall as ``1/|s|``, as the kinematic shape factor's envelope and dynamical
rocking curves do, so disks well off the Bragg condition still say on which side they lie. The
matching of peaks to reflections is the refined answer's and stays fixed. The objective is not
smooth enough for Gauss-Newton from a few degrees away (tried: it converged poorly end to end),
hence a search, and only around the final answer, within :data:`TILT_REACH_DEG`.
"""

from __future__ import annotations

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.refine import (
    ReflectionTable,
    RefinementSettings,
    excitation_error,
    final_match,
    peak_reach,
    skew_exp,
)

TILT_LEVELS = ((0.25, 4), (0.1, 2))  # (step in degrees, steps each side): ±1° in 0.25°, then ±0.2° in 0.1° about the best
TILT_REACH_DEG = sum(step * steps for step, steps in TILT_LEVELS)  # the farthest the search can move a tilt
RELROD_WIDTHS = (0.001, 0.002, 0.004, 0.008, 0.016)  # 1/Å: the Lorentzian widths γ tried for each tilt
AMPLITUDE_SIGMA = 0.05  # scatter of a disk's amplitude about the model, relative to the brightest disk
MIN_DISKS = 3  # matched disks below which an answer's tilt is left alone


@torch.no_grad()
def polish_tilt(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor, rotations: torch.Tensor,
                table: ReflectionTable, *, beam_energy_kev: float,
                settings: RefinementSettings = RefinementSettings()) -> torch.Tensor:
    """``(B, 3, 3)`` the ``rotations`` with the tilt that best explains each pattern's disks (see the module docstring).

    Parameters
    ----------
    kx, ky, weight
        ``(B, P)`` peaks as :func:`~stemkit.orientation.selection.strongest_peaks` gives them (1/Å from the
        beam; weights ``√I``, 0 for padding).
    rotations
        ``(B, 3, 3)`` refined answers (crystal → lab) of the phase of ``table``.
    table
        The phase's reflections.
    beam_energy_kev
        The beam energy (sets the Ewald sphere).
    settings
        The refinement's tolerances: its final gate (``3 σ_xy``) matches the peaks, ``σ_xy`` weighs positions.
    """
    k0 = 1.0 / wavelength_angstrom(beam_energy_kev)
    points = torch.stack([kx, ky], dim=-1).to(rotations.dtype)
    g, structure, measured, order = _matched(points, weight.to(rotations.dtype), rotations, table, k0, settings)
    points = torch.gather(points, 1, order.unsqueeze(-1).expand(*order.shape, 2))
    rows = torch.arange(len(rotations))
    current = rotations
    for step, steps in TILT_LEVELS:
        turns = _tilt_grid(step, steps).to(rotations.dtype)  # (T, 3, 3)
        trial = turns[None] @ current[:, None]  # (B, T, 3, 3)
        cost = _tilt_cost(points, measured, g, structure, trial, k0, settings.sigma_xy)
        current = trial[rows, cost.argmin(dim=1)]
    # fewer than MIN_DISKS matched disks fix no tilt: those answers stay as they were
    few = (measured > 0).sum(-1) < MIN_DISKS
    return torch.where(few[:, None, None], rotations, current)


def _matched(points: torch.Tensor, weight: torch.Tensor, rotations: torch.Tensor, table: ReflectionTable, k0: float,
             settings: RefinementSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reflection matched to each peak by the answer: crystal vectors ``(B, M, 3)``, ``|F|`` ``(B, M)``, the
    peaks' amplitudes relative to the pattern's brightest matched disk ``(B, M)`` (0: unmatched or padding), and
    which peaks these are ``(B, M)``: the matched ones first, ``M`` the most any pattern matched."""
    reach = peak_reach(points[..., 0], points[..., 1], weight)
    match = final_match(points, weight, rotations[:, None], table, reach, k0, settings)
    best = match.best[:, 0]
    g = torch.gather(match.chosen[:, 0], 1, best.unsqueeze(-1).expand(*best.shape, 3))
    structure = torch.gather(table.amplitude[match.index[:, 0]], 1, best)
    amplitude = weight * match.hit[:, 0]
    amplitude = amplitude / amplitude.amax(-1, keepdim=True).clamp_min(1e-12)
    # the matched disks first, and no wider than the most any pattern matched: the search works on these only
    order = torch.argsort((amplitude > 0).to(torch.int8), dim=-1, descending=True, stable=True)
    width = max(1, int((amplitude > 0).sum(-1).max()))
    order = order[:, :width]
    return (torch.gather(g, 1, order.unsqueeze(-1).expand(*order.shape, 3)), torch.gather(structure, 1, order),
            torch.gather(amplitude, 1, order), order)


def _tilt_grid(step_deg: float, steps: int) -> torch.Tensor:
    """``(T, 3, 3)`` rotations about the lab x and y axes on a square grid of ``2 steps + 1`` points a side."""
    angles = np.radians(np.arange(-steps, steps + 1) * step_deg)
    ax, ay = np.meshgrid(angles, angles, indexing="ij")
    return skew_exp(torch.tensor(np.stack([ax.ravel(), ay.ravel(), np.zeros(ax.size)], axis=1)))


def _tilt_cost(points: torch.Tensor, measured: torch.Tensor, g: torch.Tensor, structure: torch.Tensor,
               trial: torch.Tensor, k0: float, sigma_xy: float) -> torch.Tensor:
    """``(B, T)``: position misfit plus amplitude misfit (scale and relrod width fitted) of each trial rotation."""
    lab = torch.einsum("btij,bpj->btpi", trial, g)  # (B, T, P, 3)
    weight = measured[:, None, :]
    position = (weight * ((points[:, None, :, :] - lab[..., :2]) ** 2).sum(-1)).sum(-1) / sigma_xy ** 2
    s2 = excitation_error(lab, k0) ** 2
    # with the scale A fitted, Σ w (w - A shape)² = Σ w³ - (Σ w² shape)² / Σ w shape²; the first sum is the same
    # for every trial and width, so the choice needs the ratio only
    bright, strong = weight * weight * structure[:, None, :], weight * structure[:, None, :] ** 2
    amplitude = None
    for width in RELROD_WIDTHS:
        inverse_root = torch.rsqrt(1.0 + s2 / width ** 2)  # the Lorentzian amplitude profile
        explained = (bright * inverse_root).sum(-1) ** 2 / (strong * inverse_root ** 2).sum(-1).clamp_min(1e-12)
        misfit = -explained / AMPLITUDE_SIGMA ** 2
        amplitude = misfit if amplitude is None else torch.minimum(amplitude, misfit)
    return position + amplitude
