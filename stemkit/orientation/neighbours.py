"""Neighbours' orientations offered to each doubtful pattern, and kept only where its own peaks prefer them.

The probe steps of an orientation map are almost always smaller than the grains, so the
orientation found in one pattern is a good guess for the patterns around it. A pattern whose
answer few of its neighbours share (a lone pixel in a grain: a wrong candidate chosen, the
right one never proposed, or the wrong phase read from a handful of disks) is **offered** its
neighbours' orientations (those most of them share first), each refined against *this* pattern's peaks in the
neighbour's phase (:mod:`stemkit.orientation.refine`; being a grain's orientation, close already, it is
polished at the final tolerances only, which also keeps it from wandering off the grain's). An
offer is adopted only when it scores higher than everything the pattern proposed itself: the
pattern's own evidence decides, never a vote, so a genuinely different pixel (a small grain,
a twin lamella, a precipitate) keeps its own answer, and patterns between grains take
whichever explains them better.

Adoption repeats in sweeps (a grain's answer spreads a pixel further each sweep), offering
again only to patterns whose neighbourhood changed. Where an adopted answer replaces one
that differs by more than the ambiguity angle, the replaced answer becomes the alternative,
and ``ambiguous`` is decided again from the two scores as in :mod:`stemkit.orientation.selection`.

Then a pattern that stays **ambiguous** (its answer and alternative explain it equally well:
a coin flip for the pattern alone) takes as its answer whichever of the two more of its
neighbours share; it stays flagged, so the map still says that the pattern itself could not tell.

Last, the 180°-about-the-beam twin. Kinematic patterns of a thin crystal hardly tell an
orientation from its twin (tilted the other way, it puts every zero-order spot at the same
place with the same excitation error), and where a grain's patterns cannot tell, its pixels
split between the two. A pattern whose nearby patterns (``twin_radius``) choose the twin of
its answer in at least ``twin_share`` of the cases is flagged ``ambiguous``, with its
refined twin as the alternative: on stemkit's benchmark such patterns were right 49 % of
the time and their twin 45 % (``benchmarks/orientation/flags_and_confidence.py``, 2026-11-22,
with the twins of :mod:`stemkit.orientation.selection` polished from their partners; 47 % and
47 % before), a coin flip that the map should show as one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from stemkit.orientation.decode import Decoded
from stemkit.orientation.loss import SymmetryTable, symmetric_geodesic
from stemkit.orientation.refine import ReflectionTable, RefinementSettings, refine_candidates
from stemkit.orientation.selection import AMBIGUITY_RATIO, TWIN, Evidence
from stemkit.preprocess.kernels import run_in_threads

OFFER_BATCH = 256  # offers refined at a time (one thread each)
OFFER_ITERATIONS = 2  # an offer is a grain's orientation, close already: polished at the final tolerances only
PAIR_CHUNK = 16_384  # orientation pairs compared at a time
REFINED_PARTS = ("explained", "complete", "rms", "matched")  # evidence besides the score that an offer brings

PeaksOf = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class NeighbourSettings:
    """How neighbours' orientations are offered.

    Attributes
    ----------
    radius
        Half-width of the neighbourhood in scan pixels (1: the 8 patterns around).
    support
        A pattern is offered its neighbours' orientations when fewer than this share of its
        answered neighbours agree with its answer (same phase, within the ambiguity angle).
    offered
        Most distinct neighbour orientations offered to one pattern (those most neighbours share).
    shared_by
        Least neighbours that must share an orientation for it to be offered. 1 (every neighbour's
        answer is offered) gained most on every specimen tried, including one grain per pattern,
        and cost 0.5 point on unrelated patterns laid out as a scan row; 2 offers only
        orientations of a grain, not of one pattern (see benchmarks/RESULTS.md).
    sweeps
        Most rounds of offers.
    break_ties
        Order each ambiguous pattern's answer and alternative by how many neighbours share each.
    twin_radius, twin_share
        Flag a pattern ambiguous with its 180°-about-the-beam twin when, of the patterns within
        ``twin_radius`` that share its answer or that twin, at least ``twin_share`` chose the
        twin (``twin_share`` > 1: never).
    """

    radius: int = 1
    support: float = 0.5
    offered: int = 3
    shared_by: int = 1
    sweeps: int = 5
    break_ties: bool = True
    twin_radius: int = 2
    twin_share: float = 0.2

    @property
    def reach(self) -> int:
        """How many scan rows away an answer can still change another's or its confidence (a block's halo)."""
        return self.radius * (self.sweeps + int(self.break_ties)) + self.twin_radius + 1

    def __post_init__(self) -> None:
        if (self.radius < 1 or self.offered < 1 or self.shared_by < 1 or self.sweeps < 0 or self.twin_radius < 1
                or not 0.0 <= self.support <= 1.0):
            raise ValueError(f"NeighbourSettings needs radius >= 1, offered >= 1, shared_by >= 1, sweeps >= 0, "
                             f"twin_radius >= 1 and support in [0, 1]; got {self}")


@dataclass
class _Offers:
    """Orientations offered to patterns: ``owner`` (m,) pattern index, ``rotation`` (m, 3, 3), ``phase`` (m,)."""

    owner: np.ndarray
    rotation: np.ndarray
    phase: np.ndarray


def neighbour_table(scan_shape: tuple[int, int], radius: int) -> np.ndarray:
    """``(n, K)`` flat indices of each pattern's neighbours within ``radius`` (-1 beyond the scan's edge)."""
    ny, nx = scan_shape
    y, x = np.divmod(np.arange(ny * nx), nx)
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if (dy, dx) != (0, 0)]
    columns = []
    for dy, dx in offsets:
        yy, xx = y + dy, x + dx
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        columns.append(np.where(inside, yy * nx + xx, -1))
    return np.stack(columns, axis=1)


def offer_neighbours(
    decoded: Decoded,
    evidence: Evidence,
    scan_shape: tuple[int, int],
    peaks_of: PeaksOf,
    tables: Sequence[ReflectionTable],
    symmetry: SymmetryTable,
    *,
    beam_energy_kev: float,
    settings: NeighbourSettings = NeighbourSettings(),
    refinement: RefinementSettings = RefinementSettings(),
    ambiguity_angle: float = 5.0,
    ambiguity_ratio: float = AMBIGUITY_RATIO,
) -> tuple[Decoded, Evidence, np.ndarray]:
    """Offer neighbours' orientations to doubtful patterns; keep those the patterns' own peaks prefer.

    Parameters
    ----------
    decoded, evidence
        The refined answers of every pattern of the scan, flat in row-major scan order
        (:func:`stemkit.orientation.selection.select`).
    scan_shape
        ``(scan_y, scan_x)``.
    peaks_of
        The strongest peaks ``(kx, ky, weight)`` of the patterns at the given flat indices
        (:func:`stemkit.orientation.selection.strongest_peaks`).
    tables, symmetry
        The phases' reflection tables and point groups, in phase order.
    beam_energy_kev
        The beam energy of the data.
    settings, refinement
        Offers and refinement tolerances (the refinement's must be those the answers were chosen with,
        so that the scores compare).
    ambiguity_angle, ambiguity_ratio
        As in :func:`~stemkit.orientation.selection.select`.

    Returns
    -------
    decoded, evidence
        The answers with adopted offers in place (the inputs are not modified).
    adopted
        ``(n,)`` bool: the answer is a neighbour's orientation, refined against this pattern.
    """
    n = int(np.prod(scan_shape))
    if len(evidence.score) != n:
        raise ValueError(f"offer_neighbours got {len(evidence.score)} answers for a scan of {scan_shape} ({n} patterns)")
    decoded = replace(decoded, **{f: np.array(getattr(decoded, f)) for f in Decoded.__dataclass_fields__})
    evidence = replace(evidence, **{f: np.array(getattr(evidence, f)) for f in Evidence.__dataclass_fields__})
    adopted = np.zeros(n, bool)
    table = neighbour_table(scan_shape, settings.radius)
    answered = evidence.score > 0
    changed = np.ones(n, bool)  # patterns whose answer changed in the last sweep (all, before the first)
    for _ in range(settings.sweeps):
        listening = answered & _near(changed, table)
        offers = _offers(decoded, answered, table, listening, symmetry, settings, ambiguity_angle)
        if offers.owner.size == 0:
            break
        refined = _refine(offers, peaks_of, tables, beam_energy_kev, refinement)
        changed = _adopt(decoded, evidence, offers, refined, symmetry, ambiguity_angle, ambiguity_ratio)
        adopted |= changed
        if not changed.any():
            break
    if settings.break_ties:
        _break_ties(decoded, evidence, table, answered, peaks_of, tables, symmetry, beam_energy_kev, refinement,
                    ambiguity_angle, ambiguity_ratio)
    if settings.twin_share <= 1.0:
        _flag_split_twins(decoded, evidence, neighbour_table(scan_shape, settings.twin_radius), answered, peaks_of,
                          tables, symmetry, beam_energy_kev, refinement, ambiguity_angle, settings.twin_share)
    return decoded, evidence, adopted


def _flag_split_twins(decoded: Decoded, evidence: Evidence, table: np.ndarray, answered: np.ndarray,
                      peaks_of: PeaksOf, tables: Sequence[ReflectionTable], symmetry: SymmetryTable,
                      beam_energy_kev: float, refinement: RefinementSettings, angle: float, share: float) -> np.ndarray:
    """Flag patterns whose neighbours split between their answer and its twin (in place); which, (n,)."""
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    twin = TWIN @ rotation
    phase = torch.as_tensor(decoded.phase, dtype=torch.long)
    everyone = np.arange(len(phase))
    distinct_twin = answered & ~_agree(rotation, twin, phase, phase, symmetry, angle).numpy()
    pairs = _answered_neighbours(table, answered) & distinct_twin[:, None]
    own = _agreement(rotation, decoded, table, pairs, symmetry, angle)
    other = _agreement(twin, decoded, table, pairs, symmetry, angle) & ~own
    n = len(everyone)
    chose_own = own.sum(1) + 1.0  # the pattern itself
    chose_twin = other.sum(1)
    flagged = everyone[distinct_twin & ~decoded.ambiguous & (chose_twin >= share * (chose_own + chose_twin))]
    if flagged.size == 0:
        return np.zeros(n, bool)
    offers = _Offers(owner=flagged, rotation=twin[flagged].double().numpy(), phase=decoded.phase[flagged])
    refined = _refine(offers, peaks_of, tables, beam_energy_kev, refinement, polish=False)
    separation = torch.rad2deg(symmetric_geodesic(rotation[flagged], torch.as_tensor(refined["rotation"], dtype=torch.float32),
                                                  symmetry, phase[flagged])).numpy()
    decoded.alternative[flagged], decoded.separation_deg[flagged] = refined["rotation"], separation
    decoded.ambiguous[flagged] = True
    evidence.alternative_score[flagged] = np.maximum(refined["score"], 0.0)
    return np.isin(everyone, flagged)


def neighbour_support(decoded: Decoded, answered: np.ndarray, scan_shape: tuple[int, int], symmetry: SymmetryTable,
                      angle: float = 5.0) -> np.ndarray:
    """``(n,)`` share of each pattern's answered 8 neighbours whose answer is the same orientation (0 with none).

    A feature of the calibrated confidence (:mod:`stemkit.orientation.confidence`): an answer its
    neighbours share is more often right.
    """
    table = neighbour_table(scan_shape, 1)
    valid = _answered_neighbours(table, answered) & answered[:, None]
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    same = _agreement(rotation, decoded, table, valid, symmetry, angle)
    return same.sum(1) / np.maximum(valid.sum(1), 1)


def _near(changed: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Patterns that changed or have a neighbour that did."""
    neighbour_changed = np.where(table >= 0, changed[np.maximum(table, 0)], False).any(axis=1)
    return changed | neighbour_changed


def _answered_neighbours(table: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """``(n, K)`` bool: the neighbour ``table[i, k]`` exists and has an answer."""
    return (table >= 0) & answered[np.maximum(table, 0)]


def _agreement(own: torch.Tensor, decoded: Decoded, table: np.ndarray, pairs: np.ndarray, symmetry: SymmetryTable,
               angle: float) -> np.ndarray:
    """``(n, K)`` bool: ``own[i]`` (a rotation in pattern ``i``'s phase) is the orientation its neighbour
    ``table[i, k]`` answered, for the ``pairs`` ``(n, K)`` asked (False elsewhere)."""
    rows, cols = np.nonzero(pairs)
    neighbour = table[rows, cols]
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    phase = torch.as_tensor(decoded.phase, dtype=torch.long)
    out = np.zeros(table.shape, bool)
    out[rows, cols] = _agree(own[rows], rotation[neighbour], phase[rows], phase[neighbour], symmetry, angle).numpy()
    return out


def _agree(a: torch.Tensor, b: torch.Tensor, phase_a: torch.Tensor, phase_b: torch.Tensor,
           symmetry: SymmetryTable, angle: float) -> torch.Tensor:
    """Whether rotations ``a`` and ``b`` (m, 3, 3) are the same orientation of the same phase, (m,) bool."""
    parts = [torch.zeros(0, dtype=torch.bool)]
    for start in range(0, a.shape[0], PAIR_CHUNK):  # bounded memory: the symmetry operators are expanded per pair
        part = slice(start, start + PAIR_CHUNK)
        distance = torch.rad2deg(symmetric_geodesic(a[part], b[part], symmetry, phase_a[part]))
        parts.append((phase_a[part] == phase_b[part]) & (distance <= angle))
    return torch.cat(parts)


def _offers(decoded: Decoded, answered: np.ndarray, table: np.ndarray, listening: np.ndarray,
            symmetry: SymmetryTable, settings: NeighbourSettings, angle: float) -> _Offers:
    """The distinct neighbour orientations offered to each doubtful, listening pattern."""
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    phase = torch.as_tensor(decoded.phase, dtype=torch.long)
    valid = _answered_neighbours(table, answered)
    same = _agreement(rotation, decoded, table, valid & listening[:, None], symmetry, angle)
    share = same.sum(1) / np.maximum(valid.sum(1), 1)
    doubtful = np.flatnonzero(listening & valid.any(1) & (share < settings.support))
    if doubtful.size == 0:
        return _Offers(np.zeros(0, int), np.zeros((0, 3, 3)), np.zeros(0, int))
    ids = table[doubtful]  # (d, K)
    usable = valid[doubtful] & ~same[doubtful]  # the pattern's own answer is no offer
    k = ids.shape[1]
    first, second = np.triu_indices(k, 1)
    ids_first, ids_second = np.maximum(ids[:, first], 0).ravel(), np.maximum(ids[:, second], 0).ravel()
    pair = _agree(rotation[ids_first], rotation[ids_second], phase[ids_first], phase[ids_second], symmetry,
                  angle).numpy().reshape(len(doubtful), -1)
    pair &= valid[doubtful][:, first] & valid[doubtful][:, second]
    together = np.zeros((len(doubtful), k, k), bool)
    together[:, first, second] = pair
    together[:, second, first] = pair
    votes = together.sum(2) + 1  # neighbours sharing each neighbour's orientation, itself included
    repeated = np.triu(together.transpose(0, 2, 1), 1).any(1)  # an earlier neighbour has the same orientation
    rank = np.where(usable & ~repeated, votes, 0)
    order = np.argsort(-rank, axis=1, kind="stable")[:, :settings.offered]
    keep = np.take_along_axis(rank, order, 1) >= settings.shared_by
    owner = np.repeat(doubtful, order.shape[1]).reshape(order.shape)[keep]
    source = np.take_along_axis(ids, order, 1)[keep]
    return _Offers(owner=owner, rotation=decoded.rotation[source], phase=decoded.phase[source])


def _refine(offers: _Offers, peaks_of: PeaksOf, tables: Sequence[ReflectionTable], beam_energy_kev: float,
            refinement: RefinementSettings, polish: bool = True) -> dict[str, np.ndarray]:
    """Each offer refined against its owner's peaks in the offer's phase: rotations and evidence, flat.

    ``polish``: the final tolerances only (for offers close to their optimum already); otherwise
    the whole refinement.
    """
    m = len(offers.owner)
    out = {"rotation": np.zeros((m, 3, 3)), "score": np.full(m, -1.0)} | {name: np.zeros(m) for name in REFINED_PARTS}
    parts = []
    for index in range(len(tables)):
        members = np.flatnonzero(offers.phase == index)
        parts += [(index, members[start:start + OFFER_BATCH]) for start in range(0, len(members), OFFER_BATCH)]

    settings = replace(refinement, iterations=OFFER_ITERATIONS) if polish else refinement

    def refine_part(part: tuple[int, np.ndarray]):
        index, members = part
        kx, ky, weight = peaks_of(offers.owner[members])
        start = torch.as_tensor(offers.rotation[members], dtype=torch.float32)[:, None]
        return refine_candidates(kx, ky, weight, start, tables[index], beam_energy_kev=beam_energy_kev,
                                 settings=settings)

    for (_, members), refined in zip(parts, run_in_threads(refine_part, parts)):
        out["rotation"][members] = refined.rotations[:, 0].double().numpy()
        for name in ("score", *REFINED_PARTS):
            out[name][members] = getattr(refined, name)[:, 0].double().numpy()
    return out


def _break_ties(decoded: Decoded, evidence: Evidence, table: np.ndarray, answered: np.ndarray, peaks_of: PeaksOf,
                tables: Sequence[ReflectionTable], symmetry: SymmetryTable, beam_energy_kev: float,
                refinement: RefinementSettings, angle: float, ratio: float) -> np.ndarray:
    """Ambiguous patterns whose alternative more neighbours share take it as their answer (in place); which, (n,)."""
    pairs = _answered_neighbours(table, answered) & (decoded.ambiguous & answered)[:, None]
    rotation = torch.as_tensor(decoded.rotation, dtype=torch.float32)
    alternative = torch.as_tensor(decoded.alternative, dtype=torch.float32)
    for_answer = _agreement(rotation, decoded, table, pairs, symmetry, angle).sum(1)
    for_alternative = _agreement(alternative, decoded, table, pairs, symmetry, angle).sum(1)
    swap = np.flatnonzero(for_alternative > for_answer)
    swapped = np.zeros(len(evidence.score), bool)
    if swap.size == 0:
        return swapped
    offers = _Offers(owner=swap, rotation=decoded.alternative[swap], phase=decoded.phase[swap])
    refined = _refine(offers, peaks_of, tables, beam_energy_kev, refinement)
    old_rotation, old_score = decoded.rotation[swap].copy(), evidence.score[swap].copy()
    decoded.rotation[swap], decoded.alternative[swap] = refined["rotation"], old_rotation
    evidence.score[swap], evidence.alternative_score[swap] = refined["score"], old_score
    for name in REFINED_PARTS:
        getattr(evidence, name)[swap] = refined[name]
    decoded.ambiguous[swap] = old_score >= ratio * refined["score"]
    swapped[swap] = True
    return swapped


def _adopt(decoded: Decoded, evidence: Evidence, offers: _Offers, refined: dict[str, np.ndarray],
           symmetry: SymmetryTable, angle: float, ratio: float) -> np.ndarray:
    """Put each pattern's best offer in place where it outscores the answer (in place); which changed, (n,)."""
    order = np.lexsort((-refined["score"], offers.owner))  # by owner, best offer first
    first = order[np.r_[True, offers.owner[order][1:] != offers.owner[order][:-1]]]
    win = first[refined["score"][first] > evidence.score[offers.owner[first]]]
    owner = offers.owner[win]
    changed = np.zeros(len(evidence.score), bool)
    if owner.size == 0:
        return changed
    new_rotation, new_phase, new_score = refined["rotation"][win], offers.phase[win], refined["score"][win]
    alternative, alternative_score = _alternatives(decoded, evidence, owner, new_rotation, new_phase, symmetry, angle)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    separation = torch.rad2deg(symmetric_geodesic(as_t(new_rotation), as_t(alternative), symmetry,
                                                  torch.as_tensor(new_phase))).numpy()
    has_alternative = alternative_score > 0
    flip = new_phase != decoded.phase[owner]
    decoded.phase_probability[owner] = np.where(flip, 1.0 - decoded.phase_probability[owner],
                                                decoded.phase_probability[owner])
    decoded.rotation[owner], decoded.phase[owner] = new_rotation, new_phase
    decoded.alternative[owner] = np.where(has_alternative[:, None, None], alternative, new_rotation)
    decoded.separation_deg[owner] = np.where(has_alternative, separation, 0.0)
    decoded.ambiguous[owner] = has_alternative & (alternative_score >= ratio * new_score)
    evidence.score[owner], evidence.alternative_score[owner] = new_score, np.maximum(alternative_score, 0.0)
    for name in REFINED_PARTS:
        getattr(evidence, name)[owner] = refined[name][win]
    changed[owner] = True
    return changed


def _alternatives(decoded: Decoded, evidence: Evidence, owner: np.ndarray, rotation: np.ndarray, phase: np.ndarray,
                  symmetry: SymmetryTable, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The best of the replaced answer and its alternative that differs from the adopted one in its phase (-1: none)."""
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    new, new_phase = as_t(rotation), torch.as_tensor(phase)
    choices = [(decoded.rotation[owner], decoded.phase[owner], evidence.score[owner]),
               (decoded.alternative[owner], decoded.phase[owner], evidence.alternative_score[owner])]
    best = np.full(len(owner), -1.0)
    alternative = np.array(rotation)
    for candidate, candidate_phase, score in choices:
        same = _agree(new, as_t(candidate), new_phase, torch.as_tensor(candidate_phase), symmetry, angle).numpy()
        better = ~same & (candidate_phase == phase) & (score > 0) & (score > best)  # alternatives share the phase
        alternative[better], best[better] = candidate[better], score[better]
    return alternative, best
