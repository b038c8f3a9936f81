"""Batched refinement of orientation candidates against each pattern's own Bragg peaks.

The transformer proposes a few rotations per pattern; this module polishes every one of
them with the kinematic geometry and scores how well it explains the pattern, so that
the final answer is as precise as the peak positions allow and the choice between
candidates (and between phases) rests on evidence, not on the network's guess.

Model (lab frame of DESIGN.md, lengths in 1/Å without 2π)
----------------------------------------------------------
A reflection ``g`` of a crystal in orientation ``R`` sits at ``g_lab = R g``; it appears at
``(g_lab[0], g_lab[1])`` and is excited according to its excitation error
``s = -(gx² + gy²) / (K + sqrt(K² - gx² - gy²)) - gz`` (``K = 1/λ``,
:mod:`stemkit.physics.kinematic`). A measured peak at ``p`` with weight ``w`` is explained
by the reflection that minimises ``|p - g_xy|² / r² + s² / (0.1 Å⁻¹)²`` (position first; the
excitation error only parts reflections stacked along the beam, which project onto one spot).

Each iteration is one Gauss-Newton step on the small rotation ``ω`` (``R ← exp([ω]×) R``)
that minimises, over the matched peaks inside a gate of radius ``r``,

.. math:: \\sum_i w_i \\left(\\frac{|p_i - g_{xy}(ω)|^2}{σ_{xy}^2} + \\frac{s_i(ω)^2}{σ_s^2}\\right)

The position term fixes the in-plane rotation and the tilt to first order; the
excitation term (a visible reflection lies near the Ewald sphere) fixes the tilt where
positions alone barely move. The gate shrinks from ``start_radius`` to a few ``σ_xy``
over the iterations (coarse to fine, like an iterative closest point fit), and the
candidate reflections are re-chosen (those closest in angle to the Ewald sphere) as the
rotation moves.

Score
-----
``explained`` is the share of the measured weight within ``3 σ_xy`` of a reflection after
refinement; ``complete`` is the share of the predicted weight ``|F|·exp(-s²/2σ_s²)`` of
reflections inside the detector that were found; ``agreement`` is the cosine between the
predicted weights and the measured ones, reflection by reflection. ``score = explained² · agreement``:
a rotation must explain what was seen, with the brightness its reflections should have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.physics.crystal import Crystal
from stemkit.physics.reflections import reflections

K_MAX = 2.2  # 1/Å: reflections further out are beyond any 4D-STEM detector
POOL_SIZE = 8  # reflections kept per candidate for the iterations, in multiples of ``candidates``
POOL_ANGLE = 0.2  # rad: the pool holds the reflections a rotation of up to about this much could bring near the sphere
VISIBLE_S = 0.05  # 1/Å: excitation errors of reflections a thin crystal still shows
STACK_SCALE = 0.1  # 1/Å: excitation error that costs as much as the gate radius when matching


@dataclass(frozen=True)
class ReflectionTable:
    """The reflections one phase can show: crystal-frame vectors and relative amplitudes.

    Attributes
    ----------
    g
        ``(N, 3)`` reciprocal vectors in the crystal frame, 1/Å.
    amplitude
        ``(N,)`` ``|F| / max |F|`` (amplitudes, not intensities: kinematic intensities
        overstate the contrast between strong and weak reflections of real, dynamical data).
    name
        The phase's name.
    """

    g: torch.Tensor
    amplitude: torch.Tensor
    name: str

    @cached_property
    def length(self) -> torch.Tensor:
        """``|g|`` (N,), ascending (computed once per table)."""
        return self.g.norm(dim=-1)

    @classmethod
    def of(cls, crystal: Crystal, k_max: float = K_MAX, device: str | torch.device = "cpu") -> ReflectionTable:
        """The table of ``crystal`` up to ``k_max`` (1/Å)."""
        found = reflections(crystal, k_max)
        amplitude = np.abs(found.structure_factor)
        keep = amplitude >= 1e-3 * amplitude.max()
        return cls(g=torch.as_tensor(found.g[keep], dtype=torch.float32, device=device),
                   amplitude=torch.as_tensor(amplitude[keep] / amplitude.max(), dtype=torch.float32, device=device),
                   name=crystal.name)


@dataclass(frozen=True)
class RefinementSettings:
    """Tolerances of :func:`refine_candidates` (lengths in 1/Å).

    ``sigma_xy`` is the position precision of a peak, ``sigma_s`` the spread of excitation
    errors of visible reflections (about 1/thickness), ``start_radius`` the first matching
    gate, ``candidates`` the reflections considered per rotation (closest to the Ewald
    sphere in angle), ``iterations`` the Gauss-Newton steps.
    """

    sigma_xy: float = 0.008
    sigma_s: float = 0.03
    start_radius: float = 0.12
    candidates: int = 64
    iterations: int = 6
    damping: float = 1e-3
    final_sigma_s: float | None = 0.004

    def _fraction(self, iteration: int) -> float:
        """How far ``iteration`` is along the coarse-to-fine schedule, 0 to 1."""
        if self.iterations <= 2:
            return 1.0
        return min(1.0, iteration / (self.iterations - 2))

    def radius(self, iteration: int) -> float:
        """The matching gate of ``iteration``: geometric from ``start_radius`` down to ``3 sigma_xy``."""
        end = 3.0 * self.sigma_xy
        return float(self.start_radius * (end / self.start_radius) ** self._fraction(iteration))

    def sigma(self, iteration: int) -> float:
        """The excitation-error tolerance of ``iteration``: geometric from ``sigma_s`` to ``final_sigma_s``."""
        end = self.sigma_s if self.final_sigma_s is None else self.final_sigma_s
        return float(self.sigma_s * (end / self.sigma_s) ** self._fraction(iteration))


@dataclass
class Refined:
    """Refined candidates and their scores, ``(B, C, ...)``."""

    rotations: torch.Tensor  # (B, C, 3, 3)
    score: torch.Tensor  # (B, C)
    explained: torch.Tensor  # (B, C)
    complete: torch.Tensor  # (B, C)
    agreement: torch.Tensor  # (B, C) cosine of predicted and measured amplitudes
    rms: torch.Tensor  # (B, C) RMS position residual of matched peaks, 1/Å
    matched: torch.Tensor  # (B, C) number of matched peaks


def skew_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``exp([ω]×)`` of rotation vectors ``(..., 3)`` (Rodrigues)."""
    angle = omega.norm(dim=-1, keepdim=True).unsqueeze(-1)
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*omega.shape[:-1], 3, 3)
    small = angle < 1e-8
    a = torch.where(small, torch.ones_like(angle), torch.sin(angle) / angle.clamp_min(1e-12))
    b = torch.where(small, 0.5 * torch.ones_like(angle), (1 - torch.cos(angle)) / angle.clamp_min(1e-12) ** 2)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def excitation_error(g_lab: torch.Tensor, k0: float) -> torch.Tensor:
    """``s`` of lab-frame reciprocal vectors ``(..., 3)`` (positive inside the Ewald sphere)."""
    lateral = g_lab[..., 0] ** 2 + g_lab[..., 1] ** 2
    return -lateral / (k0 + torch.sqrt((k0 * k0 - lateral).clamp_min(0.0))) - g_lab[..., 2]


@dataclass
class _Pool:
    """The reflections an iteration may choose from, per candidate: table indices ``(B, C, K)`` and their
    crystal vectors, squared lengths and amplitudes, gathered once for all the iterations."""

    index: torch.Tensor
    g: torch.Tensor  # (B, C, K, 3)
    length2: torch.Tensor  # (B, C, K)
    amplitude: torch.Tensor  # (B, C, K)

    @classmethod
    def of(cls, index: torch.Tensor, g: torch.Tensor, table: ReflectionTable) -> _Pool:
        """The pool of the chosen table ``index`` and vectors ``g`` (as :func:`_choose_reflections` gives them)."""
        return cls(index=index, g=g, length2=table.length[index] ** 2, amplitude=table.amplitude[index])


def _choose_reflections(rotations: torch.Tensor, table: ReflectionTable, reach: torch.Tensor, k0: float,
                        count: int, angle: float, pool: _Pool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Table indices and crystal vectors of the ``count`` reflections of each rotation most likely to be visible
    (:func:`_closest_reflections`)."""
    index = _closest_reflections(rotations, table, reach, k0, count, angle, pool)
    if pool is None:
        return index, table.g[index]
    # positions in the pool: its table indices and vectors
    return torch.gather(pool.index, -1, index), torch.gather(pool.g, 2, index.unsqueeze(-1).expand(*index.shape, 3))


def _closest_reflections(rotations: torch.Tensor, table: ReflectionTable, reach: torch.Tensor, k0: float,
                         count: int, angle: float, pool: _Pool | None = None) -> torch.Tensor:
    """Indices (into the table, or into ``pool``) of the ``count`` reflections of each rotation most likely to be visible.

    A reflection is ranked by ``|s| / (VISIBLE_S + angle · |g|)``: its excitation error
    against what a thin crystal shows, widened by how far a rotation error of ``angle``
    (radians) could move it. Reflections beyond ``reach`` (B,) from the beam are left out
    (none was seen there). With a ``pool`` (an earlier, wider choice), only its reflections are ranked.
    """
    # only the beam component of R g is needed: the lateral length follows from |g| (a third of the work)
    beam = rotations[..., 2, :]  # (B, C, 3)
    if pool is None:
        within = _within_reach(table, reach)
        g_z = beam @ table.g[:within].T  # (B, C, N): one matrix product
        length2, amplitude = table.length[:within] ** 2, table.amplitude[:within]
    else:
        g_z = (pool.g @ beam.unsqueeze(-1)).squeeze(-1)
        length2, amplitude = pool.length2, pool.amplitude
    lateral2 = (length2 - g_z * g_z).clamp_min_(0.0)
    # |s| = |lateral2 / (K + sqrt(K² - lateral2)) + g_z|, by its series in lateral2 / K² (< 1e-3 here: the
    # next term is below float precision); in place, these arrays are the largest of the refinement
    closeness = (lateral2 * (0.125 / k0 ** 3)).add_(0.5 / k0).mul_(lateral2).add_(g_z).abs_()
    if angle > 0.0:
        closeness.div_(torch.sqrt(lateral2).mul_(angle).add_(VISIBLE_S))
    else:
        closeness.div_(VISIBLE_S)
    closeness.sub_(0.1 * amplitude)
    closeness.masked_fill_(lateral2 > (reach * reach)[:, None, None], torch.inf)
    return _smallest(closeness, min(count, g_z.shape[2]))


def _smallest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` smallest values along the last axis, in no particular order.

    On the CPU by numpy's partition, 3× faster than ``topk`` for these many short rows (its
    sorted output is not needed: the matching and the score do not depend on the order).
    """
    if values.device.type != "cpu" or count >= values.shape[-1]:
        return values.topk(count, dim=-1, largest=False).indices
    return torch.from_numpy(np.argpartition(values.numpy(), count - 1, axis=-1)[..., :count])


def _argmin(values: torch.Tensor) -> torch.Tensor:
    """Indices of the smallest values along the last axis (on the CPU by numpy, 4× faster than torch's argmin
    for these many short rows)."""
    if values.device.type != "cpu":
        return values.argmin(dim=-1)
    return torch.from_numpy(np.argmin(values.numpy(), axis=-1))


def _within_reach(table: ReflectionTable, reach: torch.Tensor) -> int:
    """How many of the table's reflections lie within the largest ``reach`` (the table is sorted by ``|g|``:
    those beyond every pattern's reach are a tail, cut before any work)."""
    return max(1, int(torch.searchsorted(table.length, reach.max() * (1.0 + 1e-6), right=True)))


def _match(points: torch.Tensor, g_lab: torch.Tensor, k0: float, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For each peak, the reflection explaining it: its index and squared distance, ``(B, C, P)`` each."""
    b, c, m = g_lab.shape[:3]
    p = points.shape[1]
    s = excitation_error(g_lab, k0)  # (B, C, M)
    spots = g_lab[..., :2]
    # cost |p - g|² / r² + s² / S² = |p|² / r² + (|g|² / r² + s² / S²) - 2 p·g / r²; the first term is the
    # same for every reflection of a peak, so the choice needs only the other two: one batched product
    offset = (spots * spots).sum(-1) / radius ** 2 + s * s / STACK_SCALE ** 2
    cost = torch.baddbmm(offset.reshape(b * c, 1, m), points.unsqueeze(1).expand(b, c, p, 2).reshape(b * c, p, 2),
                         spots.reshape(b * c, m, 2).transpose(1, 2), alpha=-2.0 / radius ** 2)
    best = _argmin(cost).reshape(b, c, p)
    matched = torch.gather(spots, 2, best.unsqueeze(-1).expand(b, c, p, 2))
    return best, ((points.unsqueeze(1) - matched) ** 2).sum(-1)


def _gauss_newton_step(points: torch.Tensor, weights: torch.Tensor, g_lab: torch.Tensor, amplitude: torch.Tensor,
                       best: torch.Tensor, inside: torch.Tensor, k0: float, settings: RefinementSettings,
                       sigma_s: float) -> torch.Tensor:
    """The rotation vector ``ω`` (B, C, 3) of one damped Gauss-Newton step."""
    index = best.unsqueeze(-1).expand(*best.shape, 3)
    g = torch.gather(g_lab, 2, index)  # (B, C, P, 3) matched reflections
    gx, gy, gz = g.unbind(-1)
    zero = torch.zeros_like(gx)
    # d g_lab / d ω = -[g]×: rows for x, y, z.
    jx = torch.stack([zero, gz, -gy], -1)
    jy = torch.stack([-gz, zero, gx], -1)
    jz = torch.stack([gy, -gx, zero], -1)
    js = -(gx / k0).unsqueeze(-1) * jx - (gy / k0).unsqueeze(-1) * jy - jz  # d s / d ω
    ex = points[:, None, :, 0] - gx
    ey = points[:, None, :, 1] - gy
    s = excitation_error(g, k0)
    w = weights[:, None, :] * inside  # (B, C, P)
    a, b = 1.0 / settings.sigma_xy ** 2, 1.0 / sigma_s ** 2
    # Cauchy (IRLS) weights on the excitation term: strong low-order reflections stay visible far from
    # the Bragg condition (the sinc² tails), so a large |s| must not drag the tilt.
    robust = 1.0 / (1.0 + (s / sigma_s) ** 2)
    # A reflection bright for its structure factor is near the Bragg condition: its s counts fully;
    # one faint for its structure factor may sit far out on the shape factor's tail.
    ratio = weights[:, None, :] / torch.gather(amplitude, -1, best).clamp_min(1e-3)
    ratio = (ratio / (ratio * inside).amax(-1, keepdim=True).clamp_min(1e-12)) ** 2
    robust = robust * ratio
    # weighted least squares: H = Jᵀ W J and the gradient Jᵀ W r over the rows (x, y, s) of every matched peak
    jacobian = torch.cat([jx, jy, js], dim=2)  # (B, C, 3P, 3)
    residual = torch.cat([ex, ey, -s], dim=2)  # (B, C, 3P)
    weighted = jacobian * torch.cat([a * w, a * w, b * robust * w], dim=2).unsqueeze(-1)
    hessian = weighted.transpose(-1, -2) @ jacobian
    gradient = (weighted.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
    scale = hessian.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(1e-12)
    eye = torch.eye(3, dtype=g.dtype, device=g.device)
    hessian = hessian + settings.damping * scale.unsqueeze(-1) * eye + 1e-9 * eye
    step = torch.linalg.solve(hessian, gradient.unsqueeze(-1)).squeeze(-1)
    return step.clamp(-0.1, 0.1)  # at most ~6° per step about each axis


def peak_reach(kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(B,)`` how far from the beam each pattern's reflections are looked for (1/Å): a little beyond its
    furthest peak (``weight`` 0 marks padding)."""
    distance = torch.where(weight > 0, torch.sqrt(kx ** 2 + ky ** 2).to(weight.dtype), torch.zeros_like(weight))
    return distance.amax(-1) * 1.05 + 0.02


@torch.no_grad()
def reflection_pool(rotations: torch.Tensor, table: ReflectionTable, reach: torch.Tensor, *, beam_energy_kev: float,
                    settings: RefinementSettings = RefinementSettings()) -> torch.Tensor | None:
    """``(B, C, K)`` table indices of the reflections a refinement of ``rotations`` may use: those a rotation of up
    to about :data:`POOL_ANGLE` could bring near the Ewald sphere, chosen once from the whole table.

    None where the patterns (``reach`` (B,), :func:`peak_reach`) reach fewer than twice that many: then every
    iteration chooses from the whole table (a pool would gather more than it saves).
    """
    count = POOL_SIZE * settings.candidates
    if 2 * count >= _within_reach(table, reach):
        return None
    k0 = 1.0 / wavelength_angstrom(beam_energy_kev)
    return _closest_reflections(rotations, table, reach, k0, count, POOL_ANGLE)


@torch.no_grad()
def refine_candidates(
    kx: torch.Tensor,
    ky: torch.Tensor,
    weight: torch.Tensor,
    rotations: torch.Tensor,
    table: ReflectionTable,
    *,
    beam_energy_kev: float,
    settings: RefinementSettings = RefinementSettings(),
    pool: torch.Tensor | None = None,
) -> Refined:
    """Refine ``C`` candidate rotations of each of ``B`` patterns against its peaks.

    Parameters
    ----------
    kx, ky
        ``(B, P)`` peak positions relative to the direct beam, 1/Å (direct beam excluded).
    weight
        ``(B, P)`` peak weights (0 for padding), e.g. the square root of the intensity.
    rotations
        ``(B, C, 3, 3)`` candidate rotations, crystal → lab.
    table
        The phase's reflections.
    beam_energy_kev
        The beam energy (sets the Ewald sphere).
    settings
        Tolerances.
    pool
        ``(B, C, K)`` table indices the iterations may choose from (:func:`reflection_pool`, for these
        rotations or ones within a few degrees of them); None: chosen here.
    """
    k0 = 1.0 / wavelength_angstrom(beam_energy_kev)
    points = torch.stack([kx, ky], dim=-1).to(rotations.dtype)
    weights = weight.to(rotations.dtype)
    total = weights.sum(-1).clamp_min(1e-12)
    reach = peak_reach(kx, ky, weights)
    current = rotations.clone()
    if pool is None:
        pool = reflection_pool(current, table, reach, beam_energy_kev=beam_energy_kev, settings=settings)
    pool = None if pool is None else _Pool.of(pool, table.g[pool], table)
    for iteration in range(settings.iterations):
        radius = settings.radius(iteration)
        if iteration % 2 == 0:
            index, chosen = _choose_reflections(current, table, reach, k0, settings.candidates, radius, pool)
            amplitude = table.amplitude[index]
        g_lab = chosen @ current.transpose(-1, -2)  # (B, C, M, 3): R g of every chosen reflection
        best, distance2 = _match(points, g_lab, k0, radius)
        inside = (distance2 < radius ** 2).to(weights.dtype)
        omega = _gauss_newton_step(points, weights, g_lab, amplitude, best, inside, k0, settings,
                                   settings.sigma(iteration))
        current = skew_exp(omega) @ current
    return _score(points, weights, total, current, table, reach, k0, settings, pool)


@dataclass
class FinalMatch:
    """Each peak matched, at the final gate ``3 σ_xy``, to a reflection of a rotation ``(B, C, ...)``."""

    index: torch.Tensor  # (B, C, M) table indices of the reflections considered
    chosen: torch.Tensor  # (B, C, M, 3) their crystal vectors
    g_lab: torch.Tensor  # (B, C, M, 3) and lab vectors
    best: torch.Tensor  # (B, C, P) each peak's reflection (position in M)
    distance2: torch.Tensor  # (B, C, P) squared distance to it, 1/Å²
    hit: torch.Tensor  # (B, C, P) within the gate (and not padding)


def final_match(points: torch.Tensor, weights: torch.Tensor, rotations: torch.Tensor, table: ReflectionTable,
                reach: torch.Tensor, k0: float, settings: RefinementSettings, pool: _Pool | None = None) -> FinalMatch:
    """The peaks ``(B, P, 2)`` (``weights`` 0: padding) matched to the reflections of ``rotations`` ``(B, C, 3, 3)``
    nearest the Ewald sphere, at the final gate: what the score reads, and what the tilt polish keeps fixed."""
    index, chosen = _choose_reflections(rotations, table, reach, k0, settings.candidates, 0.0, pool)
    g_lab = chosen @ rotations.transpose(-1, -2)
    radius = 3.0 * settings.sigma_xy
    best, distance2 = _match(points, g_lab, k0, radius)
    hit = (distance2 < radius ** 2) & (weights[:, None, :] > 0)
    return FinalMatch(index=index, chosen=chosen, g_lab=g_lab, best=best, distance2=distance2, hit=hit)


def _score(points, weights, total, rotations, table, reach, k0, settings, pool) -> Refined:
    """The scores of refined rotations (see the module docstring)."""
    match = final_match(points, weights, rotations, table, reach, k0, settings, pool)
    index, g_lab, best, distance2, hit = match.index, match.g_lab, match.best, match.distance2, match.hit
    explained = (weights[:, None, :] * hit).sum(-1) / total[:, None]
    s = excitation_error(g_lab, k0)
    lateral = torch.sqrt(g_lab[..., 0] ** 2 + g_lab[..., 1] ** 2)
    predicted = table.amplitude[index] * torch.exp(-0.5 * (s / settings.sigma_s) ** 2)
    predicted = predicted * (lateral <= reach[:, None, None])
    found = torch.zeros_like(predicted)
    found.scatter_(-1, best, hit.to(found.dtype))
    complete = (predicted * found.clamp_max(1.0)).sum(-1) / predicted.sum(-1).clamp_min(1e-12)
    measured = torch.zeros_like(predicted)
    measured.scatter_add_(-1, best, (weights[:, None, :] * hit).to(measured.dtype))
    agreement = (predicted * measured).sum(-1) / (predicted.norm(dim=-1) * measured.norm(dim=-1)).clamp_min(1e-12)
    matched = hit.sum(-1)
    rms = torch.sqrt((distance2 * hit).sum(-1) / matched.clamp_min(1))
    return Refined(rotations=rotations, score=explained ** 2 * agreement, explained=explained, complete=complete,
                   agreement=agreement, rms=rms, matched=matched)

