"""Answers whose 180°-about-the-beam twin the pattern cannot rule out: their bright disks lie in one zone.

Turned by 180° about the beam, a crystal puts each reflection where its Friedel mate was, with
the same ``|F|``; its excitation error at a spot differs from the answer's by twice the height
(along the beam) of the reflection above the zone plane through the origin that the other spots
define. When the disks near the Bragg condition all belong to one zone ``[uvw]``, a small extra
tilt of the twin lays that plane where the answer's lies, and every one of them is excited as
before: kinematically, and for a centrosymmetric crystal dynamically too in the projection
approximation, the two are the same pattern. What still tells them apart is second order (the
Ewald sphere's curvature) and the weak disks far from the Bragg condition, whose brightness in a
real foil (thickness fringes, bending, the probe's convergence) says little about the sign of their
excitation error. On the issue-5 benchmark (benchmarks/RESULTS.md) the twin was the truth for
16-36 % of such patterns whose alternative scored within 0.7-0.985 of the answer, against
1-9 % where the bright disks span more than one zone.

So an answer is flagged **ambiguous** with its twin when its disks within :data:`CORE_S` of the
Bragg condition lie within :data:`ZONE_TOLERANCE` of one lattice plane through the origin, its
alternative is the twin, and the alternative's score reaches :data:`ZONE_AMBIGUITY_RATIO` of the
answer's (below it, the score's evidence, mostly the reflections the twin would light up but the
pattern leaves dark, decided right in more than 80 % of cases).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.decode import Decoded
from stemkit.orientation.loss import SymmetryTable, symmetric_geodesic
from stemkit.orientation.refine import (
    ReflectionTable,
    RefinementSettings,
    excitation_error,
    final_match,
    peak_reach,
)
from stemkit.orientation.selection import TWIN, Evidence

CORE_S = 0.03  # 1/Å: disks this near the Bragg condition are the ones a twin must excite as the answer does
ZONE_TOLERANCE = 0.005  # 1/Å: distance from one plane through the origin within which reflections are one zone
ZONE_AMBIGUITY_RATIO = 0.7  # the alternative's share of the answer's score from which a one-zone twin is flagged
TWIN_ANGLE_DEG = 10.0  # the alternative is the twin when within this of Rz(180°) R (the twin's own tilt differs)


@torch.no_grad()
def one_zone(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor, rotations: torch.Tensor,
             table: ReflectionTable, *, beam_energy_kev: float,
             settings: RefinementSettings = RefinementSettings()) -> torch.Tensor:
    """``(B,)`` bool: the disks each answer puts near the Bragg condition lie in one zone (see the module docstring).

    Parameters
    ----------
    kx, ky, weight
        ``(B, P)`` peaks as :func:`~stemkit.orientation.selection.strongest_peaks` gives them (1/Å from
        the beam; weights ``√I``, 0 for padding).
    rotations
        ``(B, 3, 3)`` answers (crystal → lab) of the phase of ``table``.
    table
        The phase's reflections.
    beam_energy_kev
        The beam energy (sets the Ewald sphere).
    settings
        The refinement's tolerances: its final gate matches peaks to reflections.

    Returns
    -------
    torch.Tensor
        True where at least two matched disks are within :data:`CORE_S` of the Bragg condition and all of
        them lie within :data:`ZONE_TOLERANCE` of one plane through the origin.
    """
    k0 = 1.0 / wavelength_angstrom(beam_energy_kev)
    rotations = rotations.to(torch.float32)
    points = torch.stack([kx, ky], dim=-1).to(rotations.dtype)
    weight = weight.to(rotations.dtype)
    match = final_match(points, weight, rotations[:, None], table, peak_reach(kx, ky, weight), k0, settings)
    best = match.best[:, 0].unsqueeze(-1).expand(-1, -1, 3)  # each peak's reflection
    g = torch.gather(match.chosen[:, 0], 1, best)  # (B, P, 3) crystal frame
    s = excitation_error(torch.gather(match.g_lab[:, 0], 1, best), k0)
    core = match.hit[:, 0] & (s.abs() < CORE_S)
    w = weight * core
    scatter = torch.einsum("bp,bpi,bpj->bij", w, g, g).double()
    normal = torch.linalg.eigh(scatter).eigenvectors[..., 0].to(g.dtype)  # the plane's normal: least spread
    distance = torch.where(core, (g @ normal[..., None]).squeeze(-1).abs(), torch.zeros_like(s))
    return (core.sum(-1) >= 2) & (distance.amax(-1) <= ZONE_TOLERANCE)


def flag_zone_twins(decoded: Decoded, evidence: Evidence, zone: np.ndarray, symmetry: SymmetryTable,
                    ratio: float = ZONE_AMBIGUITY_RATIO) -> Decoded:
    """``decoded`` with one-zone answers flagged ambiguous where their alternative is their twin and scores at least
    ``ratio`` of theirs (the inputs are not modified).

    ``zone`` ``(n,)``: :func:`one_zone` of each answer.
    """
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    alternative = torch.as_tensor(decoded.alternative, dtype=torch.float32)
    phase = torch.as_tensor(decoded.phase, dtype=torch.long)
    from_twin = torch.rad2deg(symmetric_geodesic(alternative, TWIN @ rotation, symmetry, phase)).numpy()
    flagged = (np.asarray(zone, bool) & (from_twin <= TWIN_ANGLE_DEG) & (evidence.score > 0)
               & (evidence.alternative_score >= ratio * evidence.score))
    return replace(decoded, ambiguous=np.asarray(decoded.ambiguous, bool) | flagged)
