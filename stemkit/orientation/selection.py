"""From the model's hypotheses to one refined answer per pattern, with its alternative and the evidence.

The transformer gives ``K`` rotation hypotheses and a phase. Kinematic patterns near a zone
axis look the same after a 180° rotation about the beam (Friedel's law makes ``g`` and
``-g`` equally bright, and the zero-order Laue zone has no ``g_z`` to tell them apart), so
each hypothesis ``R`` is joined by its twin ``Rz(180°) R``. Every hypothesis is refined
against the pattern's own peaks (:mod:`stemkit.orientation.refine`) in the predicted phase
(or in every phase), and scored; each twin starts from its refined partner turned about the
beam, which puts every zero-order spot where the partner's are, and is only polished at the
final tolerances (``TWIN_ITERATIONS``). Refined from scratch instead, the twins cost 15 % of
the map's time and did no better (benchmarks/RESULTS.md). The answer is the best-scoring candidate; the alternative
is the best one that is a different orientation (more than ``ambiguity_angle`` away once
the crystal's symmetry is taken into account); the pattern is **ambiguous** when the
alternative's score reaches ``ambiguity_ratio`` of the answer's: the pattern itself cannot
tell them apart, and stemkit says so instead of picking one silently. On a map, an answer whose
bright disks lie in one zone is flagged from a lower ratio where its alternative is its twin
(:mod:`stemkit.orientation.zones`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.decode import Decoded
from stemkit.orientation.indexing import PairLibrary, by_consensus, index_pairs
from stemkit.orientation.loss import SymmetryTable, symmetric_geodesic
from stemkit.orientation.refine import (
    Refined,
    ReflectionTable,
    RefinementSettings,
    peak_reach,
    refine_candidates,
    reflection_pool,
)

TWIN = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))  # 180° about the beam
AMBIGUITY_RATIO = 0.985
REFINE_PEAKS = 24  # strongest peaks used by the refinement
INDEXED_CANDIDATES = 3  # orientations from peak-pair indexing added to the model's, each with its twin
PHASE_DOUBT = 0.9  # patterns whose phase the model gives less probability than this are refined in every phase
SAME_START_DEG = 1.0  # candidates of a pattern closer than this are one start: refined once (a third of them)
TWIN_ITERATIONS = 2  # Gauss-Newton steps at the final tolerances that polish a twin started from its refined partner


@dataclass
class Evidence:
    """Per-pattern figures of the refined answer, for confidence and for users ``(n,)``."""

    score: np.ndarray
    alternative_score: np.ndarray
    explained: np.ndarray
    complete: np.ndarray
    rms: np.ndarray  # 1/Å
    matched: np.ndarray


def strongest_peaks(kx: np.ndarray, ky: np.ndarray, intensity: np.ndarray, valid: np.ndarray,
                    beam_radius: float | np.ndarray,
                    count: int = REFINE_PEAKS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``count`` strongest diffracted peaks per pattern (direct beam excluded) and their weights √I.

    ``beam_radius`` (1/Å) is one value or one per pattern; peaks within 1.5 of it are the beam.
    """
    k = np.hypot(kx, ky)
    radius = np.broadcast_to(np.asarray(beam_radius, float), (k.shape[0],))[:, None]
    keep = np.asarray(valid, bool) & np.isfinite(k) & (k > 1.5 * radius) & (intensity > 0)
    weight = np.where(keep, np.sqrt(np.where(keep, intensity, 0.0)), 0.0)
    order = np.argsort(-weight, axis=1, kind="stable")[:, :count]
    take = lambda a: torch.as_tensor(np.take_along_axis(np.nan_to_num(a), order, 1), dtype=torch.float32)  # noqa: E731
    return take(kx), take(ky), take(weight)


def candidates_of(decoded: Decoded) -> torch.Tensor:
    """``(n, 2, 3, 3)``: the model's answer and alternative (their 180° twins join in the refinement)."""
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    alternative = torch.as_tensor(decoded.alternative, dtype=torch.float32)
    return torch.stack([rotation, alternative], dim=1)


def indexed_candidates(peaks: tuple[torch.Tensor, torch.Tensor, torch.Tensor], library: PairLibrary,
                       symmetry: torch.Tensor, *, beam_energy_kev: float, keep: int | None = None) -> torch.Tensor:
    """``(n, keep, 3, 3)``: the ``keep`` (default :data:`INDEXED_CANDIDATES`) best-supported orientations from
    peak-pair indexing (their 180° twins join in the refinement)."""
    keep = INDEXED_CANDIDATES if keep is None else keep
    kx, ky, weight = peaks
    k0 = 1.0 / wavelength_angstrom(beam_energy_kev)
    rotations, cost = index_pairs(kx, ky, weight, library, k0=k0)
    return by_consensus(rotations, cost, symmetry, keep)


def select(
    decoded: Decoded,
    peaks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    tables: list[ReflectionTable],
    symmetry: SymmetryTable,
    *,
    beam_energy_kev: float,
    settings: RefinementSettings = RefinementSettings(),
    all_phases: bool = False,
    phase_doubt: float = PHASE_DOUBT,
    ambiguity_angle: float = 5.0,
    ambiguity_ratio: float = AMBIGUITY_RATIO,
    libraries: list[PairLibrary] | None = None,
) -> tuple[Decoded, Evidence]:
    """Refine the candidates of every pattern and choose (see the module docstring).

    Parameters
    ----------
    decoded
        The model's answers for ``n`` patterns.
    peaks
        ``kx``, ``ky``, ``weight`` ``(n, P)`` from :func:`strongest_peaks`.
    tables
        One reflection table per phase, in the model's phase order.
    symmetry
        The phases' point groups.
    beam_energy_kev
        The beam energy of the data.
    settings
        Refinement tolerances.
    all_phases
        Refine the candidates of every pattern in every phase and let the score choose the
        phase too (slower by the number of phases).
    phase_doubt
        Otherwise, patterns whose phase the model gives a probability below this are refined
        in every phase, the others only in the model's phase (0: never; 1: always).
    ambiguity_angle, ambiguity_ratio
        See the module docstring.
    libraries
        One :class:`~stemkit.orientation.indexing.PairLibrary` per phase: candidates from
        peak-pair indexing join the model's (:func:`indexed_candidates`); None: the model's only.
    """
    kx, ky, weight = peaks
    candidates = candidates_of(decoded)
    n, c = candidates.shape[:2]
    if libraries is not None:
        c += INDEXED_CANDIDATES
    c *= 2  # each hypothesis and its twin
    rotations = torch.zeros(n, len(tables), c, 3, 3)
    scores = torch.full((n, len(tables), c), -1.0)
    parts = {name: torch.zeros(n, len(tables), c) for name in ("explained", "complete", "rms", "matched")}
    doubtful = np.asarray(decoded.phase_probability) < phase_doubt
    for index, table in enumerate(tables):
        members = torch.arange(n) if all_phases else torch.as_tensor(np.flatnonzero((decoded.phase == index) | doubtful))
        if members.numel() == 0:
            continue
        mine = candidates[members]
        if libraries is not None:
            found = (kx[members], ky[members], weight[members])
            mine = torch.cat([mine, indexed_candidates(found, libraries[index], symmetry.rotations[index],
                                                       beam_energy_kev=beam_energy_kev, keep=INDEXED_CANDIDATES)], dim=1)
        refined = _refine_with_twins(kx[members], ky[members], weight[members], mine, table, symmetry, index,
                                     beam_energy_kev=beam_energy_kev, settings=settings)
        rotations[members, index], scores[members, index] = refined.rotations, refined.score
        for name in parts:
            parts[name][members, index] = getattr(refined, name).float()
    return _choose(decoded, rotations, scores, parts, symmetry, ambiguity_angle, ambiguity_ratio)


def first_of_same(candidates: torch.Tensor, symmetry: SymmetryTable, phase: int,
                  angle: float = SAME_START_DEG) -> torch.Tensor:
    """``(B, C)``: for each candidate, the first candidate of its pattern within ``angle`` degrees of it (itself if none).

    Candidates are orientations of the phase ``phase`` of ``symmetry``: ``R`` and ``R S`` are one orientation.
    """
    b, c = candidates.shape[:2]
    first = torch.arange(c).repeat(b, 1)
    phases = torch.full((b,), phase, dtype=torch.long)
    limit = float(np.radians(angle))
    for j in range(1, c):
        for k in range(j):
            close = symmetric_geodesic(candidates[:, j], candidates[:, k], symmetry, phases) <= limit
            same = close & (first[:, j] == j) & (first[:, k] == k)
            first[:, j] = torch.where(same, torch.full_like(first[:, j], k), first[:, j])
    return first


def _refine_with_twins(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor, hypotheses: torch.Tensor,
                       table: ReflectionTable, symmetry: SymmetryTable, phase: int, *, beam_energy_kev: float,
                       settings: RefinementSettings) -> Refined:
    """``(B, 2 H)``: the ``H`` hypotheses refined in full, then their twins, polished from the refined hypotheses
    turned about the beam.

    A twin shares its partner's reflection pool: turned about the beam, a rotation brings the same
    reflections near the Ewald sphere."""
    common = dict(beam_energy_kev=beam_energy_kev)
    refined, pool = _refine_distinct(kx, ky, weight, hypotheses, table, symmetry, phase, settings=settings, **common)
    polished, _ = _refine_distinct(kx, ky, weight, TWIN @ refined.rotations, table, symmetry, phase,
                                   settings=replace(settings, iterations=TWIN_ITERATIONS), pool=pool, **common)
    return Refined(**{name: torch.cat([getattr(refined, name), getattr(polished, name)], dim=1)
                      for name in Refined.__dataclass_fields__})


def _refine_distinct(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor, candidates: torch.Tensor,
                     table: ReflectionTable, symmetry: SymmetryTable, phase: int, *, beam_energy_kev: float,
                     settings: RefinementSettings, pool: torch.Tensor | None = None
                     ) -> tuple[Refined, torch.Tensor | None]:
    """:func:`refine_candidates` on the distinct candidates (of the phase ``phase``) only; a repeated start shares its
    first's result. Also the ``(B, C, K)`` reflection pools used (``pool``, given, or chosen here; None: none)."""
    b, c = candidates.shape[:2]
    first = first_of_same(candidates, symmetry, phase)
    rows, cols = torch.nonzero(first == torch.arange(c), as_tuple=True)
    starts = candidates[rows, cols][:, None]
    if pool is None:
        pool = reflection_pool(starts, table, peak_reach(kx[rows], ky[rows], weight[rows]),
                               beam_energy_kev=beam_energy_kev, settings=settings)
    else:
        pool = pool[rows, cols][:, None]
    refined = refine_candidates(kx[rows], ky[rows], weight[rows], starts, table, beam_energy_kev=beam_energy_kev,
                                settings=settings, pool=pool)
    slot = torch.full((b, c), -1, dtype=torch.long)
    slot[rows, cols] = torch.arange(len(rows))
    source = slot.gather(1, first).reshape(-1)  # every candidate's row in the distinct results
    spread = lambda value: value[:, 0][source].reshape(b, c, *value.shape[2:])  # noqa: E731
    return (Refined(**{name: spread(getattr(refined, name)) for name in Refined.__dataclass_fields__}),
            None if pool is None else spread(pool))


def _choose(decoded, rotations, scores, parts, symmetry, ambiguity_angle, ambiguity_ratio) -> tuple[Decoded, Evidence]:
    n, p, c = scores.shape
    flat = scores.reshape(n, p * c)
    best = flat.argmax(dim=1)
    rows = torch.arange(n)
    phase, which = best // c, best % c
    answer = rotations[rows, phase, which]
    same_phase = rotations[rows, phase]  # (n, c, 3, 3)
    distance = torch.stack([torch.rad2deg(symmetric_geodesic(answer, same_phase[:, j], symmetry, phase))
                            for j in range(c)], dim=1)
    other_scores = torch.where(distance > ambiguity_angle, scores[rows, phase], torch.full_like(distance, -1.0))
    second = other_scores.argmax(dim=1)
    alternative_score = other_scores[rows, second]
    best_score = flat[rows, best]
    has_alternative = alternative_score > 0
    alternative = torch.where(has_alternative[:, None, None], same_phase[rows, second], answer)
    ambiguous = has_alternative & (alternative_score >= ambiguity_ratio * best_score) & (best_score > 0)
    numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731
    pick = lambda t: numpy(t[rows, phase, which])  # noqa: E731
    chosen = Decoded(
        rotation=numpy(answer).astype(np.float64), alternative=numpy(alternative).astype(np.float64),
        confidence=decoded.confidence, alternative_weight=decoded.alternative_weight,
        separation_deg=numpy(distance[rows, second]), ambiguous=numpy(ambiguous),
        phase=numpy(phase), phase_probability=decoded.phase_probability,
    )
    evidence = Evidence(score=numpy(best_score), alternative_score=np.maximum(numpy(alternative_score), 0.0),
                        explained=pick(parts["explained"]), complete=pick(parts["complete"]),
                        rms=pick(parts["rms"]), matched=pick(parts["matched"]))
    return chosen, evidence
