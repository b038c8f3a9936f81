"""Candidate orientations from pairs of measured Bragg peaks: classical spot-pattern indexing.

Two diffraction vectors fix a rotation once each is matched to a crystal reflection of
the same length, and the angle between them to the angle between the reflections. This is
how a crystallographer indexes a spot pattern by hand, and it needs no training: it finds
the orientation wherever the two strongest disks are reflections of the crystal, also on
patterns unlike any the transformer saw (other simulators, real detectors). stemkit uses
it beside the transformer: its candidates join the model's hypotheses before the
refinement (:mod:`stemkit.orientation.refine`), and the score decides.

Measured peaks ``(kx, ky)`` are lifted onto the Ewald sphere (a visible reflection has an
excitation error near zero), ``q = (kx, ky, -|k|² / (K + sqrt(K² - |k|²)))``, so that the
lengths and angles compared are those of three-dimensional reciprocal vectors.

The crystal's pairs are enumerated once per phase (:class:`PairLibrary`): the first
reflection is one representative of each symmetry-equivalent family, the second any strong
reflection at an angle between :data:`MIN_ANGLE_DEG` and ``180° - MIN_ANGLE_DEG`` (nearly
parallel vectors fix no rotation about themselves), one of each set that the rotations fixing the
first map into one another (they would give the same orientation again). Each measured pair is compared with
every library pair in both assignments; the closest matches, in units of the length and
angle tolerances, give rotations by the bisector triad (the error is shared between the
two vectors), which the refinement then polishes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stemkit.orientation.refine import K_MAX, ReflectionTable
from stemkit.physics.symmetry import PointGroup

MIN_ANGLE_DEG = 15.0
LIBRARY_K_MAX = K_MAX  # 1/Å: every reflection the refinement knows (dynamical scattering makes high-order disks strong too)
LIBRARY_MIN_AMPLITUDE = 0.08  # relative |F| of reflections that can be among the strongest disks (dynamical scattering lifts weak ones)
LIBRARY_MAX_PAIRS = 40_000  # families × reflections (before the angle cut): large cells keep their strongest reflections


@dataclass(frozen=True)
class IndexingSettings:
    """Tolerances and sizes of :func:`index_pairs`.

    ``length_tolerance`` (1/Å) and ``relative_length_tolerance`` allow for peak position
    error and a k-scale calibration error of a few per cent; ``angle_tolerance_deg`` for
    the angle between two measured vectors. ``strongest`` peaks form the pairs, at most
    ``pairs`` of them (strongest first); ``candidates`` rotations are kept per pattern.
    """

    length_tolerance: float = 0.01
    relative_length_tolerance: float = 0.02
    angle_tolerance_deg: float = 3.0
    strongest: int = 6
    pairs: int = 10
    candidates: int = 12


@dataclass(frozen=True)
class PairLibrary:
    """Pairs of a phase's reflections ``(first, second)`` in the crystal frame, with their lengths and angle.

    Sorted by ``length_first`` (ascending) and, among the pairs of one first reflection (a *group*), by
    ``length_second``: the pairs a measured pair of lengths can match are, in each group of about the
    right first length, one band of ``key = group · key_stride + length_second`` (the stride is longer than any
    second reflection and its tolerance, so the key sorts by group, then by length).
    """

    first: torch.Tensor  # (L, 3)
    second: torch.Tensor  # (L, 3)
    length_first: torch.Tensor  # (L,)
    length_second: torch.Tensor  # (L,)
    angle: torch.Tensor  # (L,) radians
    group_length: torch.Tensor  # (G,) |first| of each group, ascending
    key: torch.Tensor  # (L,) float64, ascending
    key_stride: float  # 1/Å

    @classmethod
    def of(cls, table: ReflectionTable, point_group: PointGroup, k_max: float = LIBRARY_K_MAX,
           min_amplitude: float = LIBRARY_MIN_AMPLITUDE) -> PairLibrary:
        """The library of ``table``'s strong reflections up to ``k_max`` (1/Å)."""
        g = table.g.double().numpy()
        length, amplitude = np.linalg.norm(g, axis=1), table.amplitude.double().numpy()
        chosen = (length <= k_max) & (amplitude >= min_amplitude)
        if chosen.sum() < 2:
            raise ValueError(f"phase {table.name!r} has fewer than two reflections of relative amplitude "
                             f">= {min_amplitude} within {k_max} 1/Å: nothing to index a pattern with")
        strong = _strongest_within_budget(g[chosen], amplitude[chosen], point_group)
        representatives = strong[_family_representatives(strong, point_group)]
        unit_r = representatives / np.linalg.norm(representatives, axis=1, keepdims=True)
        unit_s = strong / np.linalg.norm(strong, axis=1, keepdims=True)
        cosine = np.clip(unit_r @ unit_s.T, -1.0, 1.0)  # (R, S)
        lowest = np.cos(np.deg2rad(180.0 - MIN_ANGLE_DEG))
        highest = np.cos(np.deg2rad(MIN_ANGLE_DEG))
        distinct = _distinct_seconds(representatives, strong, point_group)
        r_index, s_index = np.nonzero((cosine > lowest) & (cosine < highest) & distinct)
        # groups (first reflections) by |first|, pairs within a group by |second|: index_pairs reads bands
        group_order = np.argsort(np.linalg.norm(representatives, axis=1), kind="stable")
        group_of = np.empty(len(representatives), np.int64)
        group_of[group_order] = np.arange(len(representatives))
        length_second = np.linalg.norm(strong[s_index], axis=1)
        order = np.lexsort((length_second, group_of[r_index]))
        stride = 2.0 * float(length_second.max()) + 1.0
        r_index, s_index = r_index[order], s_index[order]
        first, second = representatives[r_index], strong[s_index]
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        return cls(first=as_tensor(first), second=as_tensor(second),
                   length_first=as_tensor(np.linalg.norm(first, axis=1)),
                   length_second=as_tensor(length_second[order]),
                   angle=as_tensor(np.arccos(cosine[r_index, s_index])),
                   group_length=as_tensor(np.linalg.norm(representatives[group_order], axis=1)),
                   key=torch.as_tensor(group_of[r_index] * stride + length_second[order], dtype=torch.float64),
                   key_stride=stride)

    def __len__(self) -> int:
        return int(self.first.shape[0])


def _family_representatives(g: np.ndarray, point_group: PointGroup) -> np.ndarray:
    """Indices of one reflection per family of symmetry-equivalent ones (the first met)."""
    images = np.einsum("sij,nj->nsi", point_group.rotations, g)  # (n, S, 3)
    taken = np.zeros(len(g), bool)
    chosen = []
    scale = max(1e-6, 1e-4 * float(np.abs(g).max()))
    for index in range(len(g)):
        if taken[index]:
            continue
        chosen.append(index)
        distance = np.abs(images[index][:, None, :] - g[None, :, :]).max(-1)  # (S, n)
        taken |= (distance < scale).any(0)
    return np.asarray(chosen, dtype=np.int64)


def _strongest_within_budget(g: np.ndarray, amplitude: np.ndarray, point_group: PointGroup,
                             budget: int = LIBRARY_MAX_PAIRS) -> np.ndarray:
    """The reflections ``g`` of amplitude down to the lowest at which families × reflections stays within ``budget``
    (all of them where it does; at least the strongest two families' worth)."""
    def size(threshold: float) -> int:
        kept = g[amplitude >= threshold]
        return len(_family_representatives(kept, point_group)) * len(kept)

    levels = np.unique(amplitude)[::-1]  # strongest first
    if len(levels) < 3 or size(levels[-1]) <= budget:
        return g
    low, high = 1, len(levels) - 1  # levels[:low] fit (at least the strongest level is kept), levels[:high + 1] do not
    while low < high:
        middle = (low + high) // 2
        if size(levels[middle]) <= budget:
            low = middle + 1
        else:
            high = middle
    kept = g[amplitude >= levels[max(low - 1, 1)]]
    return kept


def _distinct_seconds(first: np.ndarray, second: np.ndarray, point_group: PointGroup) -> np.ndarray:
    """``(F, S)``: whether ``second[j]`` is the first of its orbit under the rotations that leave ``first[i]`` in
    place. Two such seconds make the same pair up to a symmetry of the crystal, hence the same orientation: the
    library keeps one, so a measured pair does not fill the candidates with copies of one orientation, nor vote
    for it more than once. (Where rounding hides an image, both are kept: a copy, never a loss.)"""
    scale = max(1e-6, 1e-4 * float(np.abs(second).max()))
    keys = np.round(second / scale).astype(np.int64)
    keep = np.ones((len(first), len(second)), bool)
    for i, vector in enumerate(first):
        fixing = point_group.rotations[np.abs(point_group.rotations @ vector - vector).max(-1) < scale]
        if len(fixing) <= 1:
            continue  # only the identity leaves this reflection in place: every second is its own orbit
        images = np.round(np.einsum("kab,sb->ksa", fixing, second) / scale).astype(np.int64)  # (K, S, 3)
        _, label = np.unique(np.concatenate([keys, images.reshape(-1, 3)]), axis=0, return_inverse=True)
        label = label.ravel()
        owner = np.full(label.max() + 1, len(second))  # the second each label belongs to (S: none)
        owner[label[:len(second)][::-1]] = np.arange(len(second))[::-1]  # the first second of each label
        orbit_first = owner[label[len(second):].reshape(len(fixing), len(second))].min(0)
        keep[i] = np.arange(len(second)) <= orbit_first
    return keep


def lift_to_ewald_sphere(kx: torch.Tensor, ky: torch.Tensor, k0: float) -> torch.Tensor:
    """``(..., 3)`` reciprocal vectors of peaks at ``(kx, ky)`` whose excitation error is zero."""
    lateral = kx * kx + ky * ky
    kz = -lateral / (k0 + torch.sqrt((k0 * k0 - lateral).clamp_min(0.0)))
    return torch.stack([kx, ky, kz], dim=-1)


def _measured_pairs(q: torch.Tensor, weight: torch.Tensor, settings: IndexingSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``pairs`` strongest usable pairs of each pattern's ``strongest`` peaks: indices ``(B, M)`` ×2 and validity."""
    count = min(settings.strongest, q.shape[1])
    i, j = torch.triu_indices(count, count, offset=1)
    qi, qj = q[:, i], q[:, j]  # (B, M, 3)
    cosine = (qi * qj).sum(-1) / (qi.norm(dim=-1) * qj.norm(dim=-1)).clamp_min(1e-12)
    angle_ok = cosine.abs() < np.cos(np.deg2rad(MIN_ANGLE_DEG))
    usable = angle_ok & (weight[:, i] > 0) & (weight[:, j] > 0)
    strength = torch.where(usable, weight[:, i] * weight[:, j], torch.full_like(cosine, -1.0))
    keep = strength.topk(min(settings.pairs, strength.shape[1]), dim=1).indices
    return i[keep], j[keep], torch.gather(usable, 1, keep)


def _band(sorted_values: torch.Tensor, centre: torch.Tensor, half_width: torch.Tensor) -> torch.Tensor:
    """``(..., W)`` indices of the ``sorted_values`` within ``half_width`` of each ``centre`` (-1 pads the shorter bands)."""
    low = torch.searchsorted(sorted_values, (centre - half_width).contiguous())
    high = torch.searchsorted(sorted_values, (centre + half_width).contiguous(), right=True)
    width = max(1, int((high - low).max()) if high.numel() else 1)
    index = low[..., None] + torch.arange(width)
    return torch.where(index < high[..., None], index, torch.full_like(index, -1))


def _library_matches(library: PairLibrary, first: torch.Tensor, second: torch.Tensor, first_half_width: torch.Tensor,
                     second_half_width: torch.Tensor, usable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The library pairs whose lengths lie within the half widths of the measured lengths ``first`` and ``second``
    (``(...)`` each; ``usable`` False: none), as flat lists: the measured pair's flat index and the library entry.

    In every group of about the right first length, the band of the right second length (no padding)."""
    groups = _band(library.group_length, first, first_half_width)  # (..., G), -1 pads
    # a measured length beyond every library length matches nothing; clamped, its window stays in its group's keys
    centre = groups.double() * library.key_stride + second.double().clamp(max=library.key_stride / 2)[..., None]
    width = second_half_width.double().clamp(max=library.key_stride / 4)[..., None]
    low = torch.searchsorted(library.key, (centre - width).contiguous())
    high = torch.searchsorted(library.key, (centre + width).contiguous(), right=True)
    count = torch.where((groups >= 0) & usable[..., None], high - low, 0).reshape(-1)
    owner = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)  # one per match
    offset = torch.arange(owner.numel(), device=count.device) - (torch.cumsum(count, 0) - count)[owner]
    return owner // groups.shape[-1], low.reshape(-1)[owner] + offset


def _smallest_per_row(row: torch.Tensor, value: torch.Tensor, rows: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` smallest ``value`` (flat, ``>= 0``, below 1e3) of each ``row``, ascending: ``(rows, count)`` values
    (inf where a row has fewer) and their positions in the flat list (-1 there)."""
    order = torch.argsort(row.double() * 1e3 + value.double())
    row = row[order]
    start = torch.cumsum(torch.bincount(row, minlength=rows), 0) - torch.bincount(row, minlength=rows)
    rank = torch.arange(len(row), device=row.device) - start[row]
    keep = rank < count
    values = torch.full((rows, count), torch.inf, device=value.device)
    positions = torch.full((rows, count), -1, dtype=torch.long, device=value.device)
    values[row[keep], rank[keep]] = value[order][keep]
    positions[row[keep], rank[keep]] = order[keep]
    return values, positions


def _bisector_frame(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` orthonormal frames (columns) built on the bisector of ``u`` and ``v``."""
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    e1 = u + v
    e2 = u - v
    e1 = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    e2 = e2 / e2.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], dim=-1)


@torch.no_grad()
def index_pairs(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor, library: PairLibrary, *, k0: float,
                settings: IndexingSettings = IndexingSettings()) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate rotations of each pattern from its strongest peak pairs.

    Parameters
    ----------
    kx, ky, weight
        ``(B, P)`` peaks sorted strongest first (as :func:`~stemkit.orientation.selection.strongest_peaks`
        gives them), 1/Å from the direct beam; weight 0 for padding.
    library
        The phase's :class:`PairLibrary`.
    k0
        ``1/λ`` of the beam, 1/Å.
    settings
        Tolerances and sizes.

    Returns
    -------
    rotations, cost
        ``(B, C, 3, 3)`` crystal → lab rotations and ``(B, C)`` match costs (sum of squared
        misfits in tolerance units; ``inf`` where no pair matched, the rotation is then the identity).
    """
    q = lift_to_ewald_sphere(kx.float(), ky.float(), k0)
    first, second, usable = _measured_pairs(q, weight.float(), settings)  # (B, M)
    rows = torch.arange(q.shape[0])[:, None]
    qa, qb = q[rows, first], q[rows, second]  # (B, M, 3)
    # both assignments: (a → first library vector, b → second) and (b → first, a → second)
    one = torch.cat([qa, qb], dim=1)
    two = torch.cat([qb, qa], dim=1)
    valid = torch.cat([usable, usable], dim=1)
    la, lb = one.norm(dim=-1), two.norm(dim=-1)
    angle = torch.arccos(((one * two).sum(-1) / (la * lb).clamp_min(1e-12)).clamp(-1.0, 1.0))
    tolerance = lambda length: settings.length_tolerance + settings.relative_length_tolerance * length  # noqa: E731
    # a match costs < 9 only if both lengths are within 3 tolerances: those library pairs of each measured pair
    measured, entry = _library_matches(library, la, lb, 3.0 * tolerance(la), 3.0 * tolerance(lb), valid)
    # the angle is the most selective term (the lengths are within 3 tolerances already): it first
    cost = ((angle.reshape(-1)[measured] - library.angle[entry]) / np.deg2rad(settings.angle_tolerance_deg)) ** 2
    close = torch.nonzero(cost < 9.0).squeeze(1)
    measured, entry, cost = measured[close], entry[close], cost[close]
    first_length, second_length = la.reshape(-1)[measured], lb.reshape(-1)[measured]
    cost = (cost + ((first_length - library.length_first[entry]) / tolerance(first_length)) ** 2
            + ((second_length - library.length_second[entry]) / tolerance(second_length)) ** 2)
    good = cost < 9.0
    pattern, pair = measured // la.shape[1], measured % la.shape[1]
    best_cost, best = _smallest_per_row(pattern[good], cost[good], q.shape[0], settings.candidates)
    take = lambda values: torch.cat([values[good], values.new_zeros(1)])[best]  # noqa: E731  (-1: the appended 0)
    pair, entry = take(pair), take(entry)
    lab = _bisector_frame(one[rows, pair], two[rows, pair])  # (B, C, 3, 3)
    crystal = _bisector_frame(library.first[entry], library.second[entry])
    rotations = lab @ crystal.transpose(-1, -2)
    found = torch.isfinite(best_cost)
    eye = torch.eye(3).expand_as(rotations)
    return torch.where(found[..., None, None], rotations, eye), best_cost


def by_consensus(rotations: torch.Tensor, cost: torch.Tensor, symmetry: torch.Tensor, keep: int,
                 agree_deg: float = 4.0) -> torch.Tensor:
    """The ``keep`` candidates of each pattern that most other candidates agree with, ``(B, keep, 3, 3)``.

    The right orientation is found again by many peak pairs, a wrong match by few: each
    candidate counts the others within ``agree_deg`` of it (the crystal's symmetry taken into
    account), ties go to the lower match cost. Unmatched slots (``cost`` inf) come last.

    Parameters
    ----------
    rotations, cost
        From :func:`index_pairs`.
    symmetry
        ``(G, 3, 3)`` the phase's proper rotations (crystal frame).
    keep
        Candidates kept per pattern.
    agree_deg
        Largest angle between candidates that agree.
    """
    matched = torch.isfinite(cost)
    # distance between candidates a and b: min over S of angle(Ra S Rbᵀ); trace(Ra S Rbᵀ) = <Ra S, Rb>
    turned = torch.einsum("bcij,sjk->bscik", rotations, symmetry)  # (B, G, C, 3, 3)
    trace = torch.einsum("bscik,bdik->bscd", turned, rotations).amax(1)  # (B, C, C)
    agree = (trace > 1.0 + 2.0 * np.cos(np.deg2rad(agree_deg))) & matched[:, None, :] & matched[:, :, None]
    votes = agree.sum(-1).to(cost.dtype) - 1e-3 * cost.clamp_max(9.0)
    votes = torch.where(matched, votes, torch.full_like(votes, -1e9))
    top = votes.topk(min(keep, votes.shape[1]), dim=1).indices
    return rotations[torch.arange(len(rotations))[:, None], top]
