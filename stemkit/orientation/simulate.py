"""Training data simulated on the fly: token sets of random orientations, phases, thicknesses and energies,
degraded the way a real peak finder sees them.

Each sample: a phase drawn at random, an orientation uniform over that phase's
fundamental zone, a thickness, a beam energy, a dose and a detector half-width; the
kinematic spots (:func:`stemkit.physics.simulate_kinematic`, sinc² shape factor) as
fractions of the beam, then what :func:`stemkit.find_peaks` really does to them:

- a disk is detected only if its expected counts exceed a detection limit drawn per
  pattern (weak disks are missed, more at low dose);
- intensities are Poisson counts times a log-normal factor (kinematic theory gets
  dynamical intensities only roughly right);
- positions jitter (sub-pixel error) and the whole pattern shifts a little (residual
  centring error);
- a few false peaks appear at random places;
- nothing beyond the detector edge is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemkit.physics.crystal import Crystal
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal as preset_crystal
from stemkit.physics.rotations import quaternion_to_matrix, random_fundamental_zone
from stemkit.orientation.tokens import tokens_from_arrays

K_MAX_SIMULATED = 2.1


@dataclass(frozen=True)
class Augmentation:
    """Ranges the training samples are drawn from (uniform unless said otherwise)."""

    beam_energies_kev: tuple[float, ...] = (200.0, 300.0)
    thickness_nm: tuple[float, float] = (5.0, 80.0)
    detector_half_width: tuple[float, float] = (1.0, 2.0)
    dose: tuple[float, float] = (1e4, 1e6)  # log-uniform, electrons per pattern
    detection_counts: tuple[float, float] = (5.0, 40.0)
    intensity_spread: float = 0.4  # σ of the log-normal factor
    position_jitter: tuple[float, float] = (0.0005, 0.004)  # 1/Å, σ per peak
    centring_error: float = 0.004  # 1/Å, σ of the common shift
    false_peaks: float = 0.5  # mean number per pattern (Poisson)
    probe_radius: float = 0.05  # 1/Å, for dropping the direct beam
    max_tokens: int = 48
    s_max: float = 0.05


@dataclass
class TrainingBatch:
    """Token features and masks with the truth they were made from."""

    features: np.ndarray  # (n, T, F) float32
    mask: np.ndarray  # (n, T) bool
    rotations: np.ndarray  # (n, 3, 3) crystal → lab
    phase: np.ndarray  # (n,) index into the phases


def simulate_batch(
    phases: tuple[str | Crystal, ...], n: int, rng: np.random.Generator, augmentation: Augmentation = Augmentation()
) -> TrainingBatch:
    """Simulate ``n`` training samples.

    Parameters
    ----------
    phases
        The crystals the model learns (preset names or :class:`Crystal`); ``phase`` indexes them.
    n
        Number of samples.
    rng
        Random generator (the batch is deterministic for its state).
    augmentation
        The ranges to draw from.
    """
    crystals = [preset_crystal(p) if isinstance(p, str) else p for p in phases]
    phase = rng.integers(len(crystals), size=n)
    energy = rng.choice(np.asarray(augmentation.beam_energies_kev, float), size=n)
    rotations = np.empty((n, 3, 3))
    width = augmentation.max_tokens + 16
    kx, ky, fraction = (np.zeros((n, width)) for _ in range(3))
    for index, xtal in enumerate(crystals):
        for kev in np.unique(energy):
            members = np.flatnonzero((phase == index) & (energy == kev))
            if members.size == 0:
                continue
            rotations[members] = quaternion_to_matrix(random_fundamental_zone(members.size, xtal.point_group, seed=rng))
            thickness = rng.uniform(*augmentation.thickness_nm, size=members.size)
            spots = simulate_kinematic(xtal, rotations[members], beam_energy_kev=float(kev), k_max=K_MAX_SIMULATED,
                                       thickness=10.0 * thickness, s_max=augmentation.s_max, max_reflections=width,
                                       dtype=np.float64)
            share = np.where(spots.valid, spots.beam_fraction(), 0.0)
            kx[members], ky[members] = spots.kx, spots.ky
            fraction[members] = share / (1.0 + share.sum(axis=1, keepdims=True))
    kx, ky, counts, valid = _as_seen_by_a_peak_finder(kx, ky, fraction, rng, augmentation)
    features, mask = tokens_from_arrays(kx, ky, counts, valid, beam_energy_kev=energy,
                                        beam_radius=augmentation.probe_radius, max_tokens=augmentation.max_tokens)
    return TrainingBatch(features=features, mask=mask, rotations=rotations, phase=phase)


def _as_seen_by_a_peak_finder(kx, ky, fraction, rng: np.random.Generator, aug: Augmentation):
    """Detection limit, counting noise, jitter, centring error, false peaks and the detector edge."""
    n, width = kx.shape
    dose = np.exp(rng.uniform(*np.log(aug.dose), size=(n, 1)))
    expected = dose * fraction
    counts = rng.poisson(expected) * np.exp(rng.normal(0.0, aug.intensity_spread, size=expected.shape))
    detected = (expected >= rng.uniform(*aug.detection_counts, size=(n, 1))) & (counts > 0)
    jitter = rng.uniform(*aug.position_jitter, size=(n, 1))
    shift = rng.normal(0.0, aug.centring_error, size=(n, 2))
    kx = kx + rng.normal(size=kx.shape) * jitter + shift[:, :1]
    ky = ky + rng.normal(size=ky.shape) * jitter + shift[:, 1:]
    half_width = rng.uniform(*aug.detector_half_width, size=(n, 1))
    n_false = np.minimum(rng.poisson(aug.false_peaks, size=n), 8)
    false_kx = rng.uniform(-1, 1, size=(n, 8)) * half_width
    false_ky = rng.uniform(-1, 1, size=(n, 8)) * half_width
    false_counts = rng.uniform(1.0, 3.0, size=(n, 8)) * aug.detection_counts[0]
    false_valid = np.arange(8)[None, :] < n_false[:, None]
    kx, ky = np.concatenate([kx, false_kx], 1), np.concatenate([ky, false_ky], 1)
    counts = np.concatenate([counts, false_counts], 1)
    valid = np.concatenate([detected, false_valid], 1)
    valid &= (np.abs(kx) < half_width) & (np.abs(ky) < half_width)
    return kx, ky, counts, valid
