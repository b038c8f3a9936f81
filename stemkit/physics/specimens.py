"""Synthetic specimens with ground truth: 4D datasets whose every pixel is known.

Each generator returns an ``xarray.Dataset`` whose ``intensity`` is the canonical 4D
DataArray and whose other variables are ground-truth maps on ``(scan_y, scan_x)``.
Generators are deterministic for a seed, and with ``lazy=True`` build a dask-backed
cube row by row (the noise of each scan row is seeded by ``(seed, row)``, so the lazy
and in-memory cubes are identical).

Intensities of the kinematic model grow as ``(λ t |F| / V)²`` and exceed the incident
beam for strong reflections of crystals tens of nanometres thick; the generators
therefore conserve electrons, giving the direct beam ``1 / (1 + Σ I_g)`` and each
reflection ``I_g / (1 + Σ I_g)``. (Dynamical diffraction is the later, physical answer.)
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from stemkit.data.datacube import datacube
from stemkit.data.contract import SCAN_DIMS
from stemkit.physics.crystal import Crystal
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal as preset_crystal
from stemkit.physics.render import Detector, disk_radius, finish_patterns, lorentzian_background, render_disks
from stemkit.physics.rotations import quaternion_to_matrix, random_fundamental_zone

MIN_FRACTION = 1e-7


@dataclass(frozen=True)
class Optics:
    """Beam and detector settings shared by the generators."""

    beam_energy_kev: float = 300.0
    convergence_mrad: float = 1.0
    pattern_size: int = 128
    k_step: float = 0.025
    psf_sigma_px: float = 0.5
    background_fraction: float = 0.05
    background_width: float = 0.4

    def detector(self) -> Detector:
        """The detector these settings describe."""
        return Detector(shape=(self.pattern_size, self.pattern_size), k_step=self.k_step, psf_sigma_px=self.psf_sigma_px)


def spot_patterns(
    crystal: Crystal,
    rotations: np.ndarray,
    thickness_nm: np.ndarray,
    optics: Optics,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots (direct beam first) of each orientation as fractions of the incident beam.

    Returns
    -------
    kx, ky, fraction
        Arrays ``(n, 1 + n_reflections)`` in 1/Å and fractions that sum to 1 per pattern.
    """
    spots = simulate_kinematic(crystal, rotations, beam_energy_kev=optics.beam_energy_kev, k_max=optics.detector().k_max(),
                               thickness=10.0 * np.atleast_1d(thickness_nm), dtype=np.float64)
    fraction = np.where(spots.valid, spots.beam_fraction(), 0.0)
    total = 1.0 + fraction.sum(axis=1, keepdims=True)
    fraction = fraction / total
    fraction = np.where(fraction > MIN_FRACTION, fraction, 0.0)
    n = len(rotations)
    kx = np.concatenate([np.zeros((n, 1)), np.where(spots.valid, spots.kx, 0.0)], axis=1)
    ky = np.concatenate([np.zeros((n, 1)), np.where(spots.valid, spots.ky, 0.0)], axis=1)
    return kx, ky, np.concatenate([1.0 / total, fraction], axis=1)


def polycrystal(
    phases: tuple[str | Crystal, ...] = ("Cu", "Cu2O"),
    scan_shape: tuple[int, int] = (64, 64),
    n_grains: int = 12,
    *,
    pattern_size: int = 128,
    k_step: float = 0.025,
    beam_energy_kev: float = 300.0,
    convergence_mrad: float = 1.0,
    thickness_nm: tuple[float, float] = (10.0, 40.0),
    dose: float | None = 1e5,
    background_fraction: float = 0.05,
    scan_step_nm: float = 2.0,
    seed: int = 0,
    lazy: bool = False,
) -> xr.Dataset:
    """A polycrystal of Voronoi grains with random orientations and phases.

    Parameters
    ----------
    phases
        Crystals (preset names or :class:`Crystal`), each grain drawing one at random.
    scan_shape
        ``(n_y, n_x)`` probe positions.
    n_grains
        Number of Voronoi grains.
    pattern_size, k_step
        Detector pixels (square) and pixel size in 1/Å.
    beam_energy_kev, convergence_mrad
        Beam energy and convergence semi-angle (sets the disk radius).
    thickness_nm
        Range of foil thickness; each grain draws one uniformly.
    dose
        Electrons per pattern (Poisson noise); ``None`` for noiseless patterns that sum to 1.
    background_fraction
        Weight of a diffuse Lorentzian background (inelastic and thermal diffuse scattering).
    scan_step_nm
        Probe step.
    seed
        Seed for grains, orientations, phases and noise.
    lazy
        Build a dask-backed cube (chunks of whole scan rows) instead of computing it now.

    Returns
    -------
    xarray.Dataset
        ``intensity`` (the canonical 4D DataArray), ground truth ``quaternion`` (dim ``quat``,
        (w, x, y, z), crystal → lab, in the fundamental zone of the grain's point group),
        ``phase`` (names), ``grain`` (index) and ``thickness`` (nm).
    """
    rng = np.random.default_rng(seed)
    crystals = [preset_crystal(p) if isinstance(p, str) else p for p in phases]
    optics = Optics(beam_energy_kev=beam_energy_kev, convergence_mrad=convergence_mrad, pattern_size=pattern_size,
                    k_step=k_step, background_fraction=background_fraction)
    grain = voronoi_labels(scan_shape, n_grains, rng)
    phase_of_grain = rng.integers(len(crystals), size=n_grains)
    thickness = rng.uniform(*thickness_nm, size=n_grains)
    quaternions = np.empty((n_grains, 4))
    patterns = np.empty((n_grains, pattern_size, pattern_size), dtype=np.float32)
    for index, crystal in enumerate(crystals):
        members = np.flatnonzero(phase_of_grain == index)
        if members.size == 0:
            continue
        quaternions[members] = random_fundamental_zone(members.size, crystal.point_group, seed=rng)
        patterns[members] = grain_patterns(crystal, quaternions[members], thickness[members], optics)
    intensity = noisy_cube(patterns, grain, optics, dose=dose, seed=seed, lazy=lazy)
    cube = datacube(
        intensity,
        scan_step_nm=scan_step_nm,
        k_step=k_step,
        beam_energy_kev=beam_energy_kev,
        attrs={
            "convergence_mrad": convergence_mrad,
            "source": f"stemkit.physics.polycrystal(seed={seed})",
            "dose_electrons": -1.0 if dose is None else float(dose),
        },
    )
    names = np.array([crystals[p].name for p in phase_of_grain])
    return xr.Dataset(
        {
            "intensity": cube,
            "quaternion": ((*SCAN_DIMS, "quat"), quaternions[grain]),
            "phase": (SCAN_DIMS, names[grain]),
            "grain": (SCAN_DIMS, grain),
            "thickness": (SCAN_DIMS, thickness[grain], {"units": "nm"}),
        },
        coords={"quat": ["w", "x", "y", "z"]},
        attrs={"phases": [c.name for c in crystals], "generator": "polycrystal", "seed": seed},
    )


def voronoi_labels(scan_shape: tuple[int, int], n_grains: int, rng: np.random.Generator) -> np.ndarray:
    """Label of the nearest of ``n_grains`` random seed points at each probe position."""
    if n_grains < 1:
        raise ValueError(f"n_grains must be at least 1; got {n_grains}")
    seeds = rng.uniform(0, 1, size=(n_grains, 2)) * np.array(scan_shape)
    yy, xx = np.mgrid[: scan_shape[0], : scan_shape[1]]
    distance = (yy[..., None] + 0.5 - seeds[:, 0]) ** 2 + (xx[..., None] + 0.5 - seeds[:, 1]) ** 2
    return distance.argmin(axis=-1)


def grain_patterns(crystal: Crystal, quaternions: np.ndarray, thickness_nm: np.ndarray, optics: Optics) -> np.ndarray:
    """Noiseless, blurred patterns (unit sum before the background) for each orientation."""
    detector = optics.detector()
    kx, ky, fraction = spot_patterns(crystal, quaternion_to_matrix(quaternions), thickness_nm, optics)
    radius = disk_radius(optics.convergence_mrad, optics.beam_energy_kev)
    signal = render_disks(kx, ky, fraction, detector=detector, radius=radius)
    background = lorentzian_background(detector, optics.background_width)
    return finish_patterns(signal, detector=detector, background=background,
                           background_fraction=optics.background_fraction)


def noisy_cube(patterns: np.ndarray, labels: np.ndarray, optics: Optics, *, dose: float | None, seed: int, lazy: bool):
    """The 4D cube ``patterns[labels]`` with Poisson noise seeded per scan row; numpy or dask."""
    n_y, n_x = labels.shape

    def rows(start: int, stop: int) -> np.ndarray:
        block = patterns[labels[start:stop]]
        if dose is None:
            return block
        out = np.empty(block.shape, dtype=np.float32)
        for i in range(stop - start):
            out[i] = np.random.default_rng([seed, start + i]).poisson(block[i] * dose)
        return out

    if not lazy:
        return rows(0, n_y)
    per_row = n_x * patterns[0].nbytes
    rows_per_chunk = max(1, int(32 * 2**20 // per_row))
    blocks = [
        da.from_delayed(_delayed_rows(rows, start, min(n_y, start + rows_per_chunk)),
                        shape=(min(n_y, start + rows_per_chunk) - start, n_x, *patterns.shape[1:]), dtype=np.float32)
        for start in range(0, n_y, rows_per_chunk)
    ]
    return da.concatenate(blocks, axis=0)


def _delayed_rows(function, start: int, stop: int):
    from dask import delayed

    return delayed(function, pure=True)(start, stop)
