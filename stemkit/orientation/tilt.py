"""The last polish of each answer's tilt, against the brightness of its disks.

The refinement (:mod:`stemkit.orientation.refine`) fixes the tilt by pulling the reflections
that are bright for their structure factor to the Bragg condition (``s = 0``). That is the
right direction from afar, but not the right end point: where no reflection of the pattern is
exactly at the Bragg condition, the brightest ones sit at ``s`` of a few 0.01 1/Å, and pulling
them to zero tilts the answer by up to a degree or two (started at the truth, the refinement
drifted a median 0.67° on clean kinematic Cu patterns and 0.51° on the issue-5 benchmark's
noisy ones; benchmarks/RESULTS.md).

Here the chosen answer's tilt (its rotation about the two lab axes normal to the beam) is
searched on a grid, coarse then fine, for the tilt that best explains the disks' amplitudes
(``√I``) with a relrod of Lorentzian profile,

.. math:: a_i \\approx A\\,|F_i| \\,/\\, \\sqrt{1 + (s_i/γ)^2},

the scale ``A`` and width ``γ`` fitted for each tilt (``γ`` from a few values, 0.0005 to
0.016 1/Å: it stands for the thickness, ``γ ≈ 1/(π t)``, and in dynamical patterns for the
extinction), together with the disks' positions. The Lorentzian's tails fall as ``1/|s|``, as the
kinematic shape factor's envelope and dynamical rocking curves do, so disks well off the Bragg
condition still say on which side they lie. What is *not* seen counts too: the reflections
nearest the Ewald sphere that no disk matches must not be predicted brighter than the weakest
disk that was seen (a one-sided penalty, weighted :data:`ABSENT_WEIGHT`), so the Laue circle is
placed through the disks and clear of the dark reflections. The matching of peaks to reflections
is the refined answer's and stays fixed. The objective is not smooth enough for Gauss-Newton
from a few degrees away (tried: it converged poorly end to end) and has several shallow minima
within a degree, hence a search around the final answer, within :data:`TILT_REACH_DEG`: a coarse
grid, then a fine grid around each of its :data:`COARSE_KEPT` best points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.refine import (
    FinalMatch,
    ReflectionTable,
    RefinementSettings,
    excitation_error,
    final_match,
    peak_reach,
    skew_exp,
)

TILT_LEVELS = ((0.25, 3), (0.1, 2))  # (step in degrees, steps each side): ±0.75° in 0.25°, then ±0.2° in 0.1°
TILT_REACH_DEG = sum(step * steps for step, steps in TILT_LEVELS)  # the farthest the search can move a tilt
COARSE_KEPT = 4  # the coarse grid's best points, each searched by the fine grid (the deepest of several shallow minima)
RELROD_WIDTHS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)  # 1/Å: the Lorentzian widths γ tried for each tilt
AMPLITUDE_SIGMA = 0.05  # scatter of a disk's amplitude about the model, relative to the brightest disk
ABSENT_REFLECTIONS = 8  # unmatched reflections nearest the Ewald sphere that must stay darker than the weakest disk
ABSENT_WEIGHT = 0.25  # weight of their penalty against the seen disks' misfit
MIN_DISKS = 3  # matched disks below which an answer's tilt is left alone
SEARCH_GROUP = 128  # patterns searched together (sorted by their number of matched disks)
DIRECT_BEAM_CLEARANCE = 0.1  # 1/Å: without the probe radius, reflections nearer the beam than this are never dark (peaks
# inside 1.5 probe radii are dropped as the direct beam: 0.08 1/Å for a 1 mrad probe at 300 keV)


@dataclass
class _Disks:
    """What the tilt search compares each trial with, per pattern ``(B, ...)``: the matched disks first."""

    points: torch.Tensor  # (B, M, 2) positions of the matched peaks, 1/Å
    g: torch.Tensor  # (B, M, 3) crystal vectors of their reflections
    structure: torch.Tensor  # (B, M) their |F| (relative)
    measured: torch.Tensor  # (B, M) the peaks' amplitudes relative to the brightest matched disk (0: none)
    absent_g: torch.Tensor  # (B, Q, 3) crystal vectors of reflections near the Ewald sphere that no peak matched
    absent_structure: torch.Tensor  # (B, Q) their |F| (0: none)
    floor: torch.Tensor  # (B,) the weakest matched disk's relative amplitude

    def take(self, rows: torch.Tensor, width: int) -> _Disks:
        """The patterns ``rows``, their matched disks cut to the first ``width``."""
        matched = ("points", "g", "structure", "measured")
        return _Disks(**{name: getattr(self, name)[rows][:, :width] if name in matched else getattr(self, name)[rows]
                         for name in _Disks.__dataclass_fields__})


@torch.no_grad()
def polish_tilt(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor, rotations: torch.Tensor,
                table: ReflectionTable, *, beam_energy_kev: float,
                settings: RefinementSettings = RefinementSettings(), beam_radius: float | None = None,
                field: torch.Tensor | None = None) -> torch.Tensor:
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
    beam_radius
        The probe's radius (1/Å): reflections within 1.5 of it are the direct beam's, never dark (as
        ``strongest_peaks`` drops peaks there); None: within :data:`DIRECT_BEAM_CLEARANCE`.
    field
        ``(B, 4)`` ``[kx_min, kx_max, ky_min, ky_max]`` (1/Å, the peaks' frame) within which a disk could have been
        found (:func:`~stemkit.orientation.mapper.disk_field`): reflections outside it are not dark, only unseen.
        None: anywhere within the reach of the pattern's peaks.
    """
    k0 = 1.0 / wavelength_angstrom(beam_energy_kev)
    points = torch.stack([kx, ky], dim=-1).to(rotations.dtype)
    clearance = DIRECT_BEAM_CLEARANCE if beam_radius is None else 1.5 * beam_radius
    disks = _matched(points, weight.to(rotations.dtype), rotations, table, k0, settings, clearance, field)
    count = (disks.measured > 0).sum(-1)
    polished = rotations.clone()
    # patterns in groups of similar disk counts, each group no wider than its own largest count: the search's work
    # grows with the matched disks, and padding every pattern to the batch's largest count would double it
    searched = torch.nonzero(count >= MIN_DISKS).flatten()  # fewer disks fix no tilt: those stay as they were
    searched = searched[torch.argsort(count[searched], stable=True)]
    for start in range(0, len(searched), SEARCH_GROUP):
        group = searched[start:start + SEARCH_GROUP]
        polished[group] = _search(disks.take(group, int(count[group].max())), rotations[group], k0,
                                  settings.sigma_xy)
    return polished


def _search(disks: _Disks, rotations: torch.Tensor, k0: float, sigma_xy: float) -> torch.Tensor:
    """``(B, 3, 3)``: the best tilt of :data:`TILT_LEVELS`' grids, the fine one about each of the coarse one's
    :data:`COARSE_KEPT` best points."""
    rows = torch.arange(len(rotations))[:, None]
    current = rotations[:, None]  # (B, K, 3, 3): the points the next level searches around
    for level, (step, steps) in enumerate(TILT_LEVELS):
        turns = _tilt_grid(step, steps).to(rotations.dtype)  # (T, 3, 3)
        trial = (turns[None, None] @ current[:, :, None]).flatten(1, 2)  # (B, K T, 3, 3)
        cost = _tilt_cost(disks, trial, k0, sigma_xy)
        kept = COARSE_KEPT if level == 0 and len(TILT_LEVELS) > 1 else 1
        current = trial[rows, cost.topk(min(kept, cost.shape[1]), dim=1, largest=False).indices]
    return current[:, 0]


def _matched(points: torch.Tensor, weight: torch.Tensor, rotations: torch.Tensor, table: ReflectionTable, k0: float,
             settings: RefinementSettings, clearance: float = DIRECT_BEAM_CLEARANCE,
             field: torch.Tensor | None = None) -> _Disks:
    """The disks matched by the answer (``M`` the most any pattern matched) and the reflections it leaves dark."""
    reach = peak_reach(points[..., 0], points[..., 1], weight)
    match = final_match(points, weight, rotations[:, None], table, reach, k0, settings)
    best, hit, chosen = match.best[:, 0], match.hit[:, 0], match.chosen[:, 0]
    structure = table.amplitude[match.index[:, 0]]  # (B, N) of the reflections considered
    amplitude = weight * hit
    amplitude = amplitude / amplitude.amax(-1, keepdim=True).clamp_min(1e-12)
    seen = amplitude > 0
    # the matched disks first, and no wider than the most any pattern matched: the search works on these only
    order = torch.argsort(seen.to(torch.int8), dim=-1, descending=True, stable=True)
    order = order[:, :max(1, int(seen.sum(-1).max()))]
    reflection = torch.gather(best, 1, order)
    floor = torch.where(seen, amplitude, torch.ones_like(amplitude)).amin(-1)
    absent, absent_structure = _dark_reflections(match, structure, reach, k0, clearance, field)
    return _Disks(points=torch.gather(points, 1, order.unsqueeze(-1).expand(*order.shape, 2)),
                  g=torch.gather(chosen, 1, reflection.unsqueeze(-1).expand(*reflection.shape, 3)),
                  structure=torch.gather(structure, 1, reflection), measured=torch.gather(amplitude, 1, order),
                  absent_g=absent, absent_structure=absent_structure, floor=floor)


def _dark_reflections(match: FinalMatch, structure: torch.Tensor, reach: torch.Tensor, k0: float, clearance: float,
                      field: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The :data:`ABSENT_REFLECTIONS` reflections nearest the Ewald sphere, inside the peaks' reach and the ``field``,
    more than ``clearance`` from the beam, that no peak matched: crystal vectors ``(B, Q, 3)`` and ``|F|`` ``(B, Q)``
    (0 where fewer)."""
    chosen, g_lab = match.chosen[:, 0], match.g_lab[:, 0]
    found = torch.zeros(structure.shape, dtype=torch.bool)
    found.scatter_(1, match.best[:, 0], match.hit[:, 0])
    lateral = g_lab[..., :2].norm(dim=-1)
    dark = ~found & (lateral <= reach[:, None]) & (lateral > clearance)
    if field is not None:
        x, y, field = g_lab[..., 0], g_lab[..., 1], field.to(g_lab.dtype)[:, :, None]
        dark &= (x >= field[:, 0]) & (x <= field[:, 1]) & (y >= field[:, 2]) & (y <= field[:, 3])
    distance = torch.where(dark, excitation_error(g_lab, k0).abs(), torch.full_like(lateral, float("inf")))
    nearest = distance.topk(min(ABSENT_REFLECTIONS, distance.shape[1]), dim=1, largest=False).indices
    vectors = torch.gather(chosen, 1, nearest.unsqueeze(-1).expand(*nearest.shape, 3))
    return vectors, torch.gather(structure * dark, 1, nearest)


def _tilt_grid(step_deg: float, steps: int) -> torch.Tensor:
    """``(T, 3, 3)`` rotations about the lab x and y axes on a square grid of ``2 steps + 1`` points a side."""
    angles = np.radians(np.arange(-steps, steps + 1) * step_deg)
    ax, ay = np.meshgrid(angles, angles, indexing="ij")
    return skew_exp(torch.tensor(np.stack([ax.ravel(), ay.ravel(), np.zeros(ax.size)], axis=1)))


def _tilt_cost(disks: _Disks, trial: torch.Tensor, k0: float, sigma_xy: float) -> torch.Tensor:
    """``(B, T)``: position misfit plus amplitude misfit (scale and relrod width fitted) of each trial rotation."""
    lab = torch.einsum("btij,bpj->btpi", trial, disks.g)  # (B, T, M, 3)
    weight = disks.measured[:, None, :]
    position = (weight * ((disks.points[:, None] - lab[..., :2]) ** 2).sum(-1)).sum(-1) / sigma_xy ** 2
    s2 = excitation_error(lab, k0).square_()
    dark_s2 = excitation_error(torch.einsum("btij,bqj->btqi", trial, disks.absent_g), k0).square_()  # (B, T, Q)
    floor = disks.floor[:, None]
    # with the scale A fitted to the seen disks, Σ w (w - A shape)² = Σ w³ - (Σ w² shape)² / Σ w shape²; the first
    # sum is the same for every trial and width, so the choice needs the ratio only. A dark reflection predicted
    # brighter than the weakest seen disk adds floor · (A |F| shape - floor)². Sums over disks are batched
    # products, and the profiles are made in place: these (B, T, M) arrays are the search's work.
    bright = (disks.measured ** 2 * disks.structure).unsqueeze(-1)  # (B, M, 1)
    strong = (disks.measured * disks.structure ** 2).unsqueeze(-1)
    dark_structure = disks.absent_structure[:, None, :]
    amplitude = None
    for width in RELROD_WIDTHS:
        profile = torch.mul(s2, 1.0 / width ** 2).add_(1.0).rsqrt_()  # the Lorentzian amplitude profile
        fitted = torch.bmm(profile, bright).squeeze(-1)  # (B, T)
        norm = torch.bmm(profile.square_(), strong).squeeze(-1).clamp_min_(1e-12)
        scale = fitted / norm
        dark = torch.mul(dark_s2, 1.0 / width ** 2).add_(1.0).rsqrt_().mul_(dark_structure).mul_(scale[..., None])
        dark = dark.sub_(floor[..., None]).clamp_min_(0.0).square_().sum(-1) * floor
        misfit = (ABSENT_WEIGHT * dark - fitted * scale) / AMPLITUDE_SIGMA ** 2
        amplitude = misfit if amplitude is None else torch.minimum(amplitude, misfit)
    return position + amplitude
