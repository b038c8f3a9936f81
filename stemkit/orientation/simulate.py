"""Training data simulated on the fly: token sets of random orientations, phases, thicknesses and energies,
degraded the way :func:`stemkit.find_peaks` sees real patterns.

Each sample draws a phase, an orientation uniform over that phase's fundamental zone
(:func:`~stemkit.physics.random_fundamental_zone`), a foil thickness (sinc² shape factor)
and a beam energy; :func:`~stemkit.physics.simulate_kinematic` gives its spots as fractions
of the incident beam (electrons conserved: the direct beam keeps ``1 / (1 + Σ I_g)``, as in
:func:`stemkit.physics.specimens.polycrystal`). :func:`degrade` then does to the spots what
the peak finder does to rendered, noisy patterns (calibrated against it, see
:mod:`stemkit.orientation.calibration`). A share ``bloch_fraction`` of the samples is
dynamical instead (:func:`~stemkit.physics.simulate_bloch`: intensities that swing with
thickness, double-diffraction spots, absorption), so that the model does not learn that
|F|² decides which spots are bright:

- **detection**: a disk of expected counts ``N`` (dose × fraction) on a background of
  ``B`` counts under the disk (``dose × β``, falling off with ``|k|`` like a Lorentzian) is
  found when its Poisson counts plus the background's fluctuation exceed
  ``z √B + c₀`` (``z`` the finder's threshold in σ, ``c₀`` a few counts: Li & Ma at low
  counts); weak disks are missed, more at low dose; a few strong ones are lost too
  (``dropout``: overlaps, defects, the edge);
- **intensity**: Poisson counts times a log-normal factor (kinematic theory gets dynamical
  intensities only roughly right);
- **position**: an error per disk of ``√(σ₀² + (r/2)² (1 + B/N) / N)`` per axis (``r`` the disk
  radius: the centre of mass of ``N`` counts spread over a disk), ``σ₀`` a floor of a fraction of a pixel; a
  common shift of the whole pattern (the residual error of the direct-beam centring);
- **false peaks**: a Poisson number at random places, just above the detection limit;
- **detector**: only what lies inside a square window around the beam (the beam a little
  off the detector's centre) is seen.

Everything is vectorised over the batch; one draw of every random number per sample, in a
fixed order, so a batch is a pure function of the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from stemkit.physics.bloch import simulate_bloch
from stemkit.physics.crystal import Crystal
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal as preset_crystal
from stemkit.physics.rotations import quaternion_to_matrix, random_fundamental_zone
from stemkit.physics.specimens import voronoi_labels
from stemkit.orientation.tokens import tokens_from_arrays

K_MAX_SIMULATED = 2.1  # 1/Å; detectors reach at most 2 1/Å from the beam along an axis
MAX_FALSE_PEAKS = 8
ENERGY_GRID_KEV = 20.0  # energies drawn from a range are rounded to this step (one simulation call each)


@dataclass(frozen=True)
class Augmentation:
    """Ranges the training samples are drawn from (uniform; log-uniform where marked).

    Lengths in 1/Å; ``*_px`` in detector pixels, whose size is itself drawn (``k_step``).
    """

    beam_energies_kev: tuple[float, ...] = (200.0, 300.0)
    energy_range_kev: tuple[float, float] = (60.0, 300.0)
    energy_range_fraction: float = 0.2  # share of samples with an energy from the range instead
    thickness_nm: tuple[float, float] = (5.0, 80.0)
    s_max: float = 0.15  # 1/Å; the sinc² tails beyond are below any detection limit
    dose: tuple[float, float] = (3e3, 3e6)  # log-uniform, electrons per pattern
    background: tuple[float, float] = (5e-5, 2e-3)  # log-uniform β: counts under a disk at k = 0 per electron
    background_width: tuple[float, float] = (0.3, 1.0)  # Lorentzian half width of the background
    threshold_sigma: tuple[float, float] = (4.0, 6.0)
    min_counts: tuple[float, float] = (3.0, 8.0)
    dropout: float = 0.03  # share of detectable disks lost anyway
    intensity_spread: tuple[float, float] = (0.3, 0.5)  # σ of the log-normal intensity factor
    k_step: tuple[float, float] = (0.01, 0.04)  # detector pixel size
    probe_radius: tuple[float, float] = (0.03, 0.08)  # disk radius
    position_floor_px: tuple[float, float] = (0.02, 0.2)  # σ₀ of the position error per axis
    centring_error_px: tuple[float, float] = (0.0, 0.3)  # length of the common shift
    false_peak_rate: tuple[float, float] = (0.0, 0.3)  # mean false peaks per pattern
    detector_half_width: tuple[float, float] = (1.0, 2.0)  # from the beam to the detector edge
    detector_offset: float = 0.1  # beam off the detector's centre, up to this along each axis
    max_tokens: int = 48
    bloch_fraction: float = 0.0  # share of samples whose spots are dynamical (Bloch waves) instead of kinematic
    absorption: tuple[float, float] = (0.02, 0.1)  # κ of the Bloch waves' proportional absorption
    bloch_beams: int = 64  # beams of each Bloch-wave calculation, the direct beam included

    def to_dict(self) -> dict:
        """Plain values, for JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> Augmentation:
        """Inverse of :meth:`to_dict` (lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass
class Conditions:
    """What each sample of a batch was drawn with, ``(n,)`` arrays (thickness in nm, lengths in 1/Å)."""

    phase: np.ndarray
    rotations: np.ndarray  # (n, 3, 3) crystal → lab
    beam_energy_kev: np.ndarray
    thickness_nm: np.ndarray
    dose: np.ndarray


@dataclass
class Spots:
    """Kinematic spots ``(n, P)``: positions (1/Å from the beam) and fractions of the incident beam."""

    kx: np.ndarray
    ky: np.ndarray
    fraction: np.ndarray


@dataclass
class SeenPeaks:
    """Spots as a peak finder reports them, ``(n, P + MAX_FALSE_PEAKS)``, with what made them.

    ``kx``, ``ky``, ``counts``, ``valid`` are what the peak finder would return; ``clean_kx``,
    ``clean_ky``, ``expected`` the true positions and expected counts (NaN and 0 for false
    peaks); ``false`` marks false peaks; ``probe_radius``, ``k_step``, ``shift`` (n, 2) and
    ``limit`` (counts, at k = 0) are per pattern.
    """

    kx: np.ndarray
    ky: np.ndarray
    counts: np.ndarray
    valid: np.ndarray
    clean_kx: np.ndarray
    clean_ky: np.ndarray
    expected: np.ndarray
    false: np.ndarray
    probe_radius: np.ndarray
    k_step: np.ndarray
    shift: np.ndarray
    limit: np.ndarray


@dataclass
class TrainingBatch:
    """Token features and masks with the truth they were made from."""

    features: np.ndarray  # (n, T, F) float32
    mask: np.ndarray  # (n, T) bool
    rotations: np.ndarray  # (n, 3, 3) crystal → lab
    phase: np.ndarray  # (n,) index into the phases
    conditions: Conditions | None = None


def as_crystals(phases: tuple[str | Crystal, ...]) -> list[Crystal]:
    """Preset names or :class:`Crystal` objects → crystals."""
    if not phases:
        raise ValueError("need at least one phase (a preset name such as 'Cu', or a stemkit.physics.Crystal)")
    return [preset_crystal(p) if isinstance(p, str) else p for p in phases]


def simulate_batch(
    phases: tuple[str | Crystal, ...] | list[Crystal],
    n: int,
    rng: np.random.Generator,
    augmentation: Augmentation = Augmentation(),
) -> TrainingBatch:
    """Simulate ``n`` training samples.

    Parameters
    ----------
    phases
        The crystals the model learns (preset names or :class:`Crystal`); ``phase`` indexes them.
    n
        Number of samples.
    rng
        Random generator; the batch is a pure function of its state.
    augmentation
        The ranges to draw from.
    """
    crystals = as_crystals(tuple(phases))
    conditions = draw_conditions(crystals, n, rng, augmentation)
    spots = simulated_spots(crystals, conditions, rng, augmentation)
    seen = degrade(spots, conditions.dose, rng, augmentation)
    features, mask = tokens_from_arrays(seen.kx, seen.ky, seen.counts, seen.valid,
                                        beam_energy_kev=conditions.beam_energy_kev, beam_radius=seen.probe_radius,
                                        max_tokens=augmentation.max_tokens)
    return TrainingBatch(features=features, mask=mask, rotations=conditions.rotations, phase=conditions.phase,
                         conditions=conditions)


def simulate_seen_peaks(crystals: list[Crystal], n: int, seed: int, augmentation: Augmentation,
                        beam_energy_kev: float) -> tuple[Conditions, SeenPeaks]:
    """``n`` patterns drawn like the training data but at one beam energy, as a peak finder reports them.

    For measuring a trained model: the truth (``Conditions``) and the peaks (``SeenPeaks``).
    """
    augmentation = _at_one_energy(augmentation, beam_energy_kev)
    rng = np.random.default_rng(seed)
    conditions = draw_conditions(crystals, n, rng, augmentation)
    spots = simulated_spots(crystals, conditions, rng, augmentation)
    return conditions, degrade(spots, conditions.dose, rng, augmentation)


def simulate_seen_map(crystals: list[Crystal], scan_shape: tuple[int, int], n_grains: int, seed: int,
                      augmentation: Augmentation, beam_energy_kev: float) -> tuple[Conditions, SeenPeaks]:
    """A scan of grains drawn like the training data at one beam energy, as a peak finder reports it.

    ``n_grains`` grains (phase, orientation, thickness and dose drawn as in training) fill the
    ``scan_shape`` by nearest seed point (a Voronoi tessellation); every pattern of a grain has
    the grain's spots, and each is degraded on its own (its own noise, missed and false peaks).
    Flat over the scan in row-major order, like :func:`simulate_seen_peaks`: for measuring what
    needs the map, such as the neighbours' offers (:mod:`stemkit.orientation.neighbours`).
    """
    augmentation = _at_one_energy(augmentation, beam_energy_kev)
    rng = np.random.default_rng(seed)
    grains = draw_conditions(crystals, n_grains, rng, augmentation)
    spots = simulated_spots(crystals, grains, rng, augmentation)
    label = voronoi_labels(scan_shape, n_grains, rng).ravel()
    conditions = Conditions(**{name: getattr(grains, name)[label] for name in Conditions.__dataclass_fields__})
    pattern_spots = Spots(**{name: getattr(spots, name)[label] for name in Spots.__dataclass_fields__})
    return conditions, degrade(pattern_spots, conditions.dose, rng, augmentation)


def _at_one_energy(augmentation: Augmentation, beam_energy_kev: float) -> Augmentation:
    """``augmentation`` with every sample at ``beam_energy_kev`` (for measuring a model at one energy)."""
    return Augmentation.from_dict(augmentation.to_dict() | {"beam_energies_kev": (float(beam_energy_kev),),
                                                            "energy_range_fraction": 0.0})


def draw_conditions(crystals: list[Crystal], n: int, rng: np.random.Generator, aug: Augmentation) -> Conditions:
    """Phase, orientation (uniform over the phase's fundamental zone), energy, thickness and dose of ``n`` samples."""
    phase = rng.integers(len(crystals), size=n)
    listed = rng.choice(np.asarray(aug.beam_energies_kev, float), size=n)
    ranged = np.round(rng.uniform(*aug.energy_range_kev, size=n) / ENERGY_GRID_KEV) * ENERGY_GRID_KEV
    energy = np.where(rng.random(n) < aug.energy_range_fraction, np.maximum(ranged, ENERGY_GRID_KEV), listed)
    thickness = rng.uniform(*aug.thickness_nm, size=n)
    dose = np.exp(rng.uniform(*np.log(aug.dose), size=n))
    quaternions = np.empty((n, 4))
    for index, xtal in enumerate(crystals):
        members = np.flatnonzero(phase == index)
        quaternions[members] = random_fundamental_zone(members.size, xtal.point_group, seed=rng)
    return Conditions(phase=phase, rotations=quaternion_to_matrix(quaternions), beam_energy_kev=energy,
                      thickness_nm=thickness, dose=dose)


def simulated_spots(crystals: list[Crystal], conditions: Conditions, rng: np.random.Generator,
                    aug: Augmentation) -> Spots:
    """Kinematic spots, and for a share ``aug.bloch_fraction`` of the samples dynamical (Bloch-wave) ones instead.

    Without Bloch waves no random number is drawn here (batches of such runs stay as they were).
    """
    width = aug.max_tokens + 16
    n = len(conditions.phase)
    if aug.bloch_fraction <= 0:
        return kinematic_spots(crystals, conditions, aug.s_max, width)
    is_dynamical = rng.random(n) < aug.bloch_fraction
    absorption = rng.uniform(*aug.absorption)
    spots = Spots(*(np.zeros((n, width)) for _ in range(3)))
    kinematic, dynamical = np.flatnonzero(~is_dynamical), np.flatnonzero(is_dynamical)
    if kinematic.size:
        _place(spots, kinematic, kinematic_spots(crystals, conditions, aug.s_max, width, kinematic))
    if dynamical.size:
        _place(spots, dynamical, bloch_spots(crystals, conditions, dynamical, absorption, aug, width))
    return spots


def _place(spots: Spots, members: np.ndarray, part: Spots) -> None:
    """Write the spots ``part`` of the samples ``members`` into ``spots``."""
    spots.kx[members], spots.ky[members], spots.fraction[members] = part.kx, part.ky, part.fraction


def _groups(crystals: list[Crystal], conditions: Conditions, members: np.ndarray):
    """``(crystal, beam energy, rows)`` of the samples ``members`` sharing a phase and an energy (one simulation
    call each); ``rows`` index into ``members``."""
    for index, xtal in enumerate(crystals):
        for kev in np.unique(conditions.beam_energy_kev[members]):
            rows = np.flatnonzero((conditions.phase[members] == index) & (conditions.beam_energy_kev[members] == kev))
            if rows.size:
                yield xtal, float(kev), rows


def bloch_spots(crystals: list[Crystal], conditions: Conditions, members: np.ndarray, absorption: float,
                aug: Augmentation, width: int) -> Spots:
    """The ``width`` brightest dynamical spots of the samples ``members`` (fractions of the incident beam)."""
    kx, ky, fraction = (np.zeros((members.size, width)) for _ in range(3))
    for xtal, kev, rows in _groups(crystals, conditions, members):
        chosen = members[rows]
        patterns = simulate_bloch(xtal, conditions.rotations[chosen], beam_energy_kev=kev,
                                  thickness=10.0 * conditions.thickness_nm[chosen, None], k_max=K_MAX_SIMULATED,
                                  n_beams=aug.bloch_beams, s_max=max(aug.s_max, 0.05), absorption=absorption,
                                  precision="single")
        bright = np.where(patterns.valid, patterns.intensity[:, 0], 0.0)
        order = np.argsort(-bright, axis=1)[:, :width]
        used = order.shape[1]
        take = lambda values: np.take_along_axis(values, order, axis=1)  # noqa: E731
        kx[rows, :used], ky[rows, :used], fraction[rows, :used] = take(patterns.kx), take(patterns.ky), take(bright)
    return Spots(kx=kx, ky=ky, fraction=fraction)


def kinematic_spots(crystals: list[Crystal], conditions: Conditions, s_max: float | None, width: int,
                    members: np.ndarray | None = None) -> Spots:
    """The ``width`` strongest kinematic spots of the samples ``members`` (default: all), as fractions of the
    incident beam."""
    members = np.arange(len(conditions.phase)) if members is None else members
    kx, ky, fraction = (np.zeros((members.size, width)) for _ in range(3))
    for xtal, kev, rows in _groups(crystals, conditions, members):
        chosen = members[rows]
        spots = simulate_kinematic(xtal, conditions.rotations[chosen], beam_energy_kev=kev,
                                   k_max=K_MAX_SIMULATED, thickness=10.0 * conditions.thickness_nm[chosen],
                                   s_max=s_max, max_reflections=width, dtype=np.float64)
        share = np.where(spots.valid, spots.beam_fraction(), 0.0)
        used = share.shape[1]
        kx[rows, :used], ky[rows, :used] = spots.kx, spots.ky
        fraction[rows, :used] = share / (1.0 + share.sum(axis=1, keepdims=True))
    return Spots(kx=kx, ky=ky, fraction=fraction)


def degrade(spots: Spots, dose: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> SeenPeaks:
    """What a peak finder reports for ``spots`` at ``dose`` electrons per pattern (see the module docstring)."""
    n, width = spots.kx.shape
    per_pattern = lambda bounds: rng.uniform(*bounds, size=(n, 1))  # noqa: E731
    k_step, radius = per_pattern(aug.k_step), per_pattern(aug.probe_radius)
    dose = np.asarray(dose, float).reshape(n, 1)
    k = np.hypot(spots.kx, spots.ky)
    gamma = per_pattern(aug.background_width)
    beta = np.exp(rng.uniform(*np.log(aug.background), size=(n, 1)))
    background = dose * beta / (1.0 + (k / gamma) ** 2)
    threshold, floor = per_pattern(aug.threshold_sigma), per_pattern(aug.min_counts)
    expected = dose * spots.fraction
    poisson = rng.poisson(expected).astype(float)
    fluctuation = np.sqrt(background) * rng.standard_normal((n, width))
    detected = poisson + fluctuation >= threshold * np.sqrt(background) + floor
    detected &= (spots.fraction > 0) & (rng.random((n, width)) >= aug.dropout)
    counts = poisson * np.exp(rng.standard_normal((n, width)) * per_pattern(aug.intensity_spread))
    sigma = np.sqrt((per_pattern(aug.position_floor_px) * k_step) ** 2
                    + (radius / 2) ** 2 * (1.0 + background / np.maximum(expected, 1.0)) / np.maximum(expected, 1.0))
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1))
    shift = per_pattern(aug.centring_error_px) * k_step * np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
    kx = spots.kx + sigma * rng.standard_normal((n, width)) + shift[:, :1]
    ky = spots.ky + sigma * rng.standard_normal((n, width)) + shift[:, 1:]
    half_width, offset = per_pattern(aug.detector_half_width), rng.uniform(-1, 1, size=(n, 2)) * aug.detector_offset
    limit = (threshold * np.sqrt(dose * beta) + floor)[:, 0]
    false_kx, false_ky, false_counts, false_valid = _false_peaks(n, half_width, offset, limit, rng, aug)
    kx, ky = np.concatenate([kx, false_kx], 1), np.concatenate([ky, false_ky], 1)
    valid = np.concatenate([detected, false_valid], 1)
    valid &= (np.abs(kx - offset[:, :1]) < half_width) & (np.abs(ky - offset[:, 1:]) < half_width)
    nan = np.full((n, MAX_FALSE_PEAKS), np.nan)
    return SeenPeaks(
        kx=kx, ky=ky, counts=np.concatenate([counts, false_counts], 1), valid=valid,
        clean_kx=np.concatenate([spots.kx, nan], 1), clean_ky=np.concatenate([spots.ky, nan], 1),
        expected=np.concatenate([expected, np.zeros((n, MAX_FALSE_PEAKS))], 1),
        false=np.concatenate([np.zeros((n, width), bool), np.ones((n, MAX_FALSE_PEAKS), bool)], 1),
        probe_radius=radius[:, 0], k_step=k_step[:, 0], shift=shift, limit=limit,
    )


def _false_peaks(n: int, half_width: np.ndarray, offset: np.ndarray, limit: np.ndarray, rng: np.random.Generator,
                 aug: Augmentation):
    """Up to :data:`MAX_FALSE_PEAKS` false peaks per pattern at random places, 1-3 × the detection limit."""
    rate = rng.uniform(*aug.false_peak_rate, size=n)
    number = np.minimum(rng.poisson(rate), MAX_FALSE_PEAKS)
    kx = offset[:, :1] + rng.uniform(-1, 1, size=(n, MAX_FALSE_PEAKS)) * half_width
    ky = offset[:, 1:] + rng.uniform(-1, 1, size=(n, MAX_FALSE_PEAKS)) * half_width
    counts = rng.uniform(1.0, 3.0, size=(n, MAX_FALSE_PEAKS)) * limit[:, None]
    return kx, ky, counts, np.arange(MAX_FALSE_PEAKS)[None, :] < number[:, None]
