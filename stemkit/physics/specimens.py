"""Synthetic specimens with ground truth: 4D datasets whose every pixel is known.

Each generator returns an ``xarray.Dataset`` whose ``intensity`` is the canonical 4D
DataArray and whose other variables are ground-truth maps on ``(scan_y, scan_x)``.
Generators are deterministic for a seed, and with ``lazy=True`` build a dask-backed
cube row by row (the noise of each scan row is seeded by ``(seed, row)``, so the lazy
and in-memory cubes are identical).

- :func:`polycrystal`: Voronoi grains of random orientation and phase.
- :func:`strained_film`: a film at a zone axis under smooth strain and rotation fields,
  optionally a lateral heterostructure (every pattern differs: rendered per chunk of rows).
- :func:`deformed_flake`: a flake in vacuum whose regions differ in strain, rotation, tilt
  (bend contours), thickness and composition, with a per-region table.

Strain and rotation follow DESIGN.md: ``F = V R``, ``a' = F a``, ``g' = F⁻ᵀ g``
(:func:`deformation_gradient`, :func:`strain_from_deformation`).

Intensities of the kinematic model grow as ``(λ t |F| / V)²`` and exceed the incident
beam for strong reflections of crystals tens of nanometres thick; the generators
therefore conserve electrons, giving the direct beam ``1 / (1 + Σ I_g)`` and each
reflection ``I_g / (1 + Σ I_g)``. (Dynamical diffraction is the later, physical answer.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from stemkit.data.datacube import datacube
from stemkit.data.contract import SCAN_DIMS
from stemkit.physics.bloch import simulate_bloch
from stemkit.physics.crystal import Crystal
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal as preset_crystal
from stemkit.physics.render import (
    Detector,
    disk_radius,
    distortion_matrix,
    finish_patterns,
    lorentzian_background,
    render_disks,
)
from stemkit.physics.rotations import axis_angle_to_matrix, quaternion_to_matrix, random_fundamental_zone

MIN_FRACTION = 1e-7
DIFFRACTION_MODELS = ("kinematic", "bloch")
BLOCH_BEAMS = 128  # beams of the generators' Bloch-wave calculations (few orientations each: accuracy first)


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
    ellipticity: tuple[float, float] | None = None
    saturation: float | None = None
    diffraction: str = "kinematic"
    absorption: float = 0.05

    def __post_init__(self) -> None:
        if self.diffraction not in DIFFRACTION_MODELS:
            raise ValueError(f"diffraction must be one of {DIFFRACTION_MODELS} (kinematic: |F|² with a thickness "
                             f"shape factor; bloch: dynamical, Bloch waves); got {self.diffraction!r}.")

    def detector(self) -> Detector:
        """The detector these settings describe."""
        return Detector(shape=(self.pattern_size, self.pattern_size), k_step=self.k_step, psf_sigma_px=self.psf_sigma_px,
                        saturation=self.saturation)

    def distortion(self) -> np.ndarray | None:
        """The elliptical distortion of the projector lenses, a 2×2 matrix on (kx, ky), or None."""
        return None if self.ellipticity is None else distortion_matrix(*self.ellipticity)


def spot_patterns(
    crystal: Crystal,
    rotations: np.ndarray,
    thickness_nm: np.ndarray,
    optics: Optics,
    *,
    k_max: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots (direct beam first) of each orientation as fractions of the incident beam.

    ``k_max`` (1/Å) defaults to the detector's corner; deformed lattices need a margin.

    Returns
    -------
    kx, ky, fraction
        Arrays ``(n, 1 + n_reflections)`` in 1/Å and fractions that sum to 1 per pattern.
    """
    k_max = optics.detector().k_max() if k_max is None else k_max
    if optics.diffraction == "bloch":
        return _bloch_spot_patterns(crystal, rotations, thickness_nm, optics, k_max)
    spots = simulate_kinematic(crystal, rotations, beam_energy_kev=optics.beam_energy_kev, k_max=k_max,
                               thickness=10.0 * np.atleast_1d(thickness_nm), dtype=np.float64)
    fraction = np.where(spots.valid, spots.beam_fraction(), 0.0)
    total = 1.0 + fraction.sum(axis=1, keepdims=True)
    return _with_direct_beam(np.where(spots.valid, spots.kx, 0.0), np.where(spots.valid, spots.ky, 0.0),
                             fraction / total, 1.0 / total)


def _with_direct_beam(kx: np.ndarray, ky: np.ndarray, fraction: np.ndarray,
                      direct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spot tables ``(n, P)`` with the direct beam ``(n, 1)`` put first at k = 0; spots below
    :data:`MIN_FRACTION` of the beam dropped (fraction 0)."""
    n = len(kx)
    fraction = np.where(fraction > MIN_FRACTION, fraction, 0.0)
    at_zero = np.zeros((n, 1))
    return (np.concatenate([at_zero, kx], axis=1), np.concatenate([at_zero, ky], axis=1),
            np.concatenate([direct, fraction], axis=1))


def _bloch_spot_patterns(crystal: Crystal, rotations: np.ndarray, thickness_nm: np.ndarray, optics: Optics,
                         k_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dynamical spots (direct beam first); what absorption took is missing from the sum."""
    patterns = simulate_bloch(crystal, rotations, beam_energy_kev=optics.beam_energy_kev,
                              thickness=10.0 * np.atleast_1d(thickness_nm)[:, None], k_max=k_max,
                              n_beams=BLOCH_BEAMS, absorption=optics.absorption)
    fraction = np.where(patterns.valid, patterns.intensity[:, 0], 0.0)
    return _with_direct_beam(patterns.kx, patterns.ky, fraction, patterns.direct_beam[:, :1])


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
    descan: Field | None = None,
    ellipticity: tuple[float, float] | None = None,
    saturation: float | None = None,
    diffraction: str = "kinematic",
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
    descan
        Shift of the direct beam on the detector over the scan, ``(ky, kx)`` in 1/Å: an
        array ``(n_y, n_x, 2)`` or a function of the fractional scan position ``(y, x)``
        returning the pair (e.g. ``lambda y, x: (0.02 * y, -0.03 * x)`` for a plane).
        Recorded as ground truth ``descan_ky``, ``descan_kx``.
    ellipticity
        ``(e, angle_deg)``: the projector lenses stretch k by ``1 + e`` along ``angle_deg``
        from +kx (disks and positions alike).
    saturation
        Counts at which a detector pixel saturates.
    diffraction
        ``"kinematic"`` (|F|² times the thickness shape factor, electrons conserved) or
        ``"bloch"`` (dynamical: :func:`~stemkit.physics.simulate_bloch` with
        :data:`BLOCH_BEAMS` beams and proportional absorption 0.05).
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
                    k_step=k_step, background_fraction=background_fraction, ellipticity=ellipticity,
                    saturation=saturation, diffraction=diffraction)
    shifts = _descan_field(descan, scan_shape)
    grain = voronoi_labels(scan_shape, n_grains, rng)
    phase_of_grain = rng.integers(len(crystals), size=n_grains)
    thickness = rng.uniform(*thickness_nm, size=n_grains)
    quaternions = np.empty((n_grains, 4))
    patterns = np.empty((n_grains, pattern_size, pattern_size), dtype=np.float32)
    spots: list[tuple[np.ndarray, ...]] = [()] * n_grains
    for index, crystal in enumerate(crystals):
        members = np.flatnonzero(phase_of_grain == index)
        if members.size == 0:
            continue
        quaternions[members] = random_fundamental_zone(members.size, crystal.point_group, seed=rng)
        kx, ky, fraction = spot_patterns(crystal, quaternion_to_matrix(quaternions[members]), thickness[members], optics)
        for row, member in enumerate(members):
            spots[member] = (kx[row], ky[row], fraction[row])
    if shifts is None and ellipticity is None:
        # every pattern of a grain is the same: render each grain once, then add the noise
        for member, (kx, ky, fraction) in enumerate(spots):
            patterns[member] = _grain_image(kx[None], ky[None], fraction[None], optics)[0]
        intensity = noisy_cube(patterns, grain, optics, dose=dose, seed=seed, lazy=lazy)
    else:
        kx, ky, fraction = _pad_stack(spots)
        rows = _SpotRows(grain, kx, ky, fraction, optics, dose, seed, descan=shifts)
        intensity = _cube_from_rows(rows, scan_shape, (pattern_size, pattern_size), lazy)
    cube = datacube(
        intensity,
        scan_step_nm=scan_step_nm,
        k_step=k_step,
        beam_energy_kev=beam_energy_kev,
        attrs={
            "convergence_mrad": convergence_mrad,
            "source": f"stemkit.physics.polycrystal(seed={seed}, diffraction={diffraction!r})",
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
            **_descan_truth(shifts, scan_shape),
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
    return _grain_image(*spot_patterns(crystal, quaternion_to_matrix(quaternions), thickness_nm, optics), optics)


def _grain_image(kx: np.ndarray, ky: np.ndarray, fraction: np.ndarray, optics: Optics) -> np.ndarray:
    """Noiseless, blurred images of spot tables ``(n, P)``, with the background mixed in."""
    detector = optics.detector()
    radius = disk_radius(optics.convergence_mrad, optics.beam_energy_kev)
    signal = render_disks(kx, ky, fraction, detector=detector, radius=radius, distortion=optics.distortion())
    background = lorentzian_background(detector, optics.background_width)
    return finish_patterns(signal, detector=Detector(detector.shape, detector.k_step, psf_sigma_px=detector.psf_sigma_px),
                           background=background, background_fraction=optics.background_fraction)


def _descan_field(descan, scan_shape: tuple[int, int]) -> np.ndarray | None:
    """The descan as an ``(n_y, n_x, 2)`` array of (ky, kx) in 1/Å, or None."""
    if descan is None:
        return None
    if callable(descan):
        y, x = fractional_positions(scan_shape)
        ky, kx = descan(y, x)
        shifts = np.stack([np.broadcast_to(np.asarray(v, dtype=float), scan_shape) for v in (ky, kx)], axis=-1)
    else:
        shifts = np.asarray(descan, dtype=float)
    if shifts.shape != (*scan_shape, 2) or not np.all(np.isfinite(shifts)):
        raise ValueError(f"descan must be finite (ky, kx) shifts of shape {(*scan_shape, 2)}, or a function of (y, x); "
                         f"got shape {shifts.shape}")
    return shifts


def _descan_truth(shifts: np.ndarray | None, scan_shape: tuple[int, int]) -> dict:
    """Ground-truth descan variables (zero when there is none)."""
    shifts = np.zeros((*scan_shape, 2)) if shifts is None else shifts
    return {
        "descan_ky": (SCAN_DIMS, shifts[..., 0], {"units": "1/Å"}),
        "descan_kx": (SCAN_DIMS, shifts[..., 1], {"units": "1/Å"}),
    }


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
        if optics.saturation is not None:
            np.minimum(out, optics.saturation, out=out)
        return out

    if not lazy:
        return rows(0, n_y)
    return _lazy_cube(rows, n_y, n_x, patterns.shape[1:])


def _rows_per_chunk(n_x: int, pattern_shape: tuple[int, ...]) -> int:
    """Scan rows per dask chunk: about 32 MiB of float32 patterns."""
    per_row = n_x * int(np.prod(pattern_shape)) * np.dtype(np.float32).itemsize
    return max(1, int(32 * 2**20 // per_row))


def _row_chunks(n_y: int, n_x: int, pattern_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(start, stop)`` of the scan-row chunks a cube is built in."""
    step = _rows_per_chunk(n_x, pattern_shape)
    return [(start, min(n_y, start + step)) for start in range(0, n_y, step)]


def _lazy_cube(rows, n_y: int, n_x: int, pattern_shape: tuple[int, ...]) -> da.Array:
    """A dask cube whose chunks of whole scan rows are ``rows(start, stop)``, computed on demand."""
    blocks = [
        da.from_delayed(_delayed_rows(rows, start, stop), shape=(stop - start, n_x, *pattern_shape), dtype=np.float32)
        for start, stop in _row_chunks(n_y, n_x, pattern_shape)
    ]
    return da.concatenate(blocks, axis=0)


def _delayed_rows(function, start: int, stop: int):
    from dask import delayed

    return delayed(function, pure=True)(start, stop)


# ---------------------------------------------------------------------------------------------
# Strain and rotation: the deformation gradient of DESIGN.md
# ---------------------------------------------------------------------------------------------

Field = float | ArrayLike | Callable[[np.ndarray, np.ndarray], ArrayLike] | None
STRAIN_CONVENTION = (
    "F = V R (left polar decomposition) with a' = F a and g' = F^-T g; exx, eyy, exy are the components of "
    "V - I (tensor shear); rotation is the angle of R in degrees, right-handed about the beam (x towards y)"
)


def deformation_gradient(exx: ArrayLike, eyy: ArrayLike, exy: ArrayLike, rotation: ArrayLike) -> np.ndarray:
    """The 2×2 deformation gradient ``F = V R`` of strain and rotation (DESIGN.md).

    Parameters
    ----------
    exx, eyy, exy
        Components of ``V - I``, tensor (not engineering) shear; broadcast together.
    rotation
        Angle of ``R`` in degrees, right-handed about the beam: positive turns +x towards +y.

    Returns
    -------
    numpy.ndarray
        ``(..., 2, 2)``, acting on real-space ``(x, y)``: ``a' = F a``; reciprocal vectors
        transform as ``g' = F⁻ᵀ g``.

    Examples
    --------
    >>> F = deformation_gradient(0.02, 0.0, 0.0, 0.0)
    >>> g = np.linalg.inv(F).T @ [0.5, 0.0]  # a 2 % stretch along x moves (g, 0) to (g / 1.02, 0)
    >>> bool(np.allclose(g, [0.5 / 1.02, 0.0]))
    True
    """
    exx, eyy, exy, angle = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (exx, eyy, exy, rotation)))
    stretch = np.stack([np.stack([1.0 + exx, exy], -1), np.stack([exy, 1.0 + eyy], -1)], -2)
    return stretch @ _rotation_2d(angle)


def strain_from_deformation(deformation: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``exx, eyy, exy, rotation`` (degrees) of deformation gradients ``(..., 2, 2)``; inverse of
    :func:`deformation_gradient`.

    Uses the closed form of the 2-D left polar decomposition: the angle of ``R`` is
    ``atan2(F₁₀ - F₀₁, F₀₀ + F₁₁)`` and ``V = F Rᵀ``.
    """
    F = np.asarray(deformation, dtype=float)
    if F.shape[-2:] != (2, 2):
        raise ValueError(f"deformation gradients must have shape (..., 2, 2); got {F.shape}.")
    if np.any(np.linalg.det(F) <= 0):
        raise ValueError("a deformation gradient must have a positive determinant (no inversion of the lattice).")
    angle = np.arctan2(F[..., 1, 0] - F[..., 0, 1], F[..., 0, 0] + F[..., 1, 1])
    stretch = F @ np.swapaxes(_rotation_2d(np.rad2deg(angle)), -1, -2)
    exy = 0.5 * (stretch[..., 0, 1] + stretch[..., 1, 0])
    return stretch[..., 0, 0] - 1.0, stretch[..., 1, 1] - 1.0, exy, np.rad2deg(angle)


def _rotation_2d(angle_deg: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 2, 2)`` by ``angle_deg`` (x towards y)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=float))
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def zone_axis_rotation(crystal: Crystal, zone_axis: tuple[int, int, int] = (0, 0, 1)) -> np.ndarray:
    """The orientation (crystal → lab, 3×3) that puts the direction ``[uvw]`` along the beam (+z).

    Lab +x is the crystal's Cartesian x (its a axis) made perpendicular to the zone axis, or
    the crystal's y when ``[uvw]`` is nearly parallel to x. For a hexagonal crystal at [001]
    this is the identity: a along +kx.
    """
    uvw = np.asarray(zone_axis, dtype=float)
    if uvw.shape != (3,) or not np.any(uvw):
        raise ValueError(f"zone_axis must be a non-zero direction [u, v, w] of three numbers; got {zone_axis!r}.")
    z = crystal.direct_basis @ uvw
    z /= np.linalg.norm(z)
    x = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x -= (x @ z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def lattice_mismatch(reference: Crystal, other: Crystal, zone_axis: tuple[int, int, int] = (0, 0, 1)) -> np.ndarray:
    """The in-plane deformation gradient ``F`` (2×2) taking ``reference``'s lattice to ``other``'s.

    Both crystals sit at ``zone_axis`` (:func:`zone_axis_rotation`) with the same Miller
    indices aligned (cube-on-cube epitaxy): ``g_other(hkl) = F⁻ᵀ g_reference(hkl)`` for every
    reflection of the zone. For 2H-WS2 → 2H-WSe2 at [001] it is ``(a_WSe2 / a_WS2) I``.
    """
    if reference.space_group is not None and other.space_group is not None \
            and reference.space_group != other.space_group:
        raise ValueError(
            f"{reference.name} (space group {reference.space_group}) and {other.name} (space group "
            f"{other.space_group}) do not share a structure type, so their lattice mismatch is not a strain; "
            "pair crystals of one structure (e.g. 'WS2' with 'WSe2' or 'MoS2')."
        )
    g_reference = zone_axis_rotation(reference, zone_axis) @ reference.reciprocal_basis
    g_other = zone_axis_rotation(other, zone_axis) @ other.reciprocal_basis
    inverse_transpose = (g_other @ np.linalg.inv(g_reference))[:2, :2]
    return np.linalg.inv(inverse_transpose).T


# ---------------------------------------------------------------------------------------------
# strained_film
# ---------------------------------------------------------------------------------------------


def _bump(y: np.ndarray, x: np.ndarray, cy: float, cx: float, sigma: float) -> np.ndarray:
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


DEFAULT_STRAIN_FIELDS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "exx": lambda y, x: 0.02 * _bump(y, x, 0.35, 0.3, 0.18) - 0.01 * (y - 0.5),
    "eyy": lambda y, x: -0.015 * _bump(y, x, 0.6, 0.65, 0.2) + 0.01 * (x - 0.5),
    "exy": lambda y, x: 0.04 * (x - 0.5) * (y - 0.5),
    "rotation": lambda y, x: 3.0 * _bump(y, x, 0.3, 0.7, 0.2) - 2.0 * (x - 0.5),
}
"""The default smooth fields of :func:`strained_film`, functions of fractional scan position ``(y, x)``."""


def fractional_positions(scan_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` of every probe position as fractions of the scan, pixel centres in (0, 1)."""
    n_y, n_x = scan_shape
    return np.meshgrid((np.arange(n_y) + 0.5) / n_y, (np.arange(n_x) + 0.5) / n_x, indexing="ij")


def _field(value: Field, name: str, scan_shape: tuple[int, int]) -> np.ndarray:
    """A field argument (None, number, array or callable of fractional (y, x)) as a float map."""
    if value is None:
        value = DEFAULT_STRAIN_FIELDS[name]
    if callable(value):
        value = value(*fractional_positions(scan_shape))
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        array = np.full(scan_shape, float(array))
    if array.shape != tuple(scan_shape):
        raise ValueError(
            f"{name} must be a number, an array of the scan's shape {tuple(scan_shape)} or a function of the "
            f"fractional scan position (y, x) returning one; got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has NaN or infinite values; give finite numbers.")
    return array


def _as_crystal(value: str | Crystal) -> Crystal:
    return preset_crystal(value) if isinstance(value, str) else value


def _film_crystals(crystal: str | Crystal | None,
                   heterostructure: tuple[str | Crystal, str | Crystal] | None) -> list[Crystal]:
    """The film's crystals: ``[crystal]``, or the two of the heterostructure."""
    if heterostructure is None:
        return [_as_crystal("WS2" if crystal is None else crystal)]
    if isinstance(heterostructure, (str, Crystal)) or len(heterostructure) != 2:
        raise ValueError(f"heterostructure must be a pair of crystals, e.g. ('WS2', 'WSe2'); got {heterostructure!r}.")
    pair = [_as_crystal(c) for c in heterostructure]
    if crystal is not None and _as_crystal(crystal).name != pair[0].name:
        raise ValueError(f"crystal={crystal!r} conflicts with heterostructure={heterostructure!r}: the first crystal "
                         "of the heterostructure is the film's reference; leave crystal=None or make them agree.")
    return pair


def _interface_mask(interface: str | ArrayLike, scan_shape: tuple[int, int]) -> np.ndarray:
    """Index of the crystal (0 or 1) at each probe position."""
    y, x = fractional_positions(scan_shape)
    if isinstance(interface, str):
        if interface == "half":
            return (x >= 0.5).astype(np.int64)
        if interface == "disk":
            return ((y - 0.5) ** 2 + (x - 0.5) ** 2 < 0.3**2).astype(np.int64)
        raise ValueError(f"interface must be 'half', 'disk' or a boolean array of the scan's shape; got {interface!r}.")
    mask = np.asarray(interface)
    if mask.shape != tuple(scan_shape):
        raise ValueError(f"an interface mask must have the scan's shape {tuple(scan_shape)}; got {mask.shape}.")
    return mask.astype(bool).astype(np.int64)


def _zone_axis_spots(crystal: Crystal, rotation: np.ndarray, thickness_nm: float, optics: Optics,
                     k_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spots of one orientation, those at the same (kx, ky) merged (e.g. the l ≠ 0 of a [001] pattern)."""
    kx, ky, fraction = spot_patterns(crystal, rotation[None], np.array([thickness_nm]), optics, k_max=k_max)
    keep = fraction[0] > 0
    key = np.round(np.stack([kx[0][keep], ky[0][keep]], axis=1) / 1e-7).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    merged = np.bincount(inverse.ravel(), weights=fraction[0][keep], minlength=len(first))
    return kx[0][keep][first], ky[0][keep][first], merged


def _pad_stack(spots: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-pattern spot lists ``(kx, ky, fraction)`` into ``(n, P)`` arrays padded with zero fraction."""
    width = max(len(s[0]) for s in spots)
    out = np.zeros((3, len(spots), width))
    for i, s in enumerate(spots):
        for j in range(3):
            out[j, i, : len(s[j])] = s[j]
    return out[0], out[1], out[2]


def _finish_rows(signal: np.ndarray, start: int, n_x: int, optics: Optics, dose: float | None,
                 seed: int) -> np.ndarray:
    """Blur, background and Poisson noise of whole scan rows, the noise of row ``r`` seeded by ``(seed, r)``."""
    detector = optics.detector()
    background = lorentzian_background(detector, optics.background_width) if optics.background_fraction > 0 else None
    n_rows = len(signal) // n_x
    out = np.empty((n_rows, n_x, *detector.shape), dtype=np.float32)
    for i in range(n_rows):
        out[i] = finish_patterns(signal[i * n_x:(i + 1) * n_x], detector=detector, background=background,
                                 background_fraction=optics.background_fraction, dose=dose,
                                 rng=np.random.default_rng([seed, start + i]))
    return out


@dataclass(frozen=True)
class _SpotRows:
    """Renders scan rows ``[start, stop)`` from spot tables: a picklable per-chunk kernel.

    Each probe position takes the spots of table ``which[y, x]``, optionally transformed by
    its own 2×2 matrix (a strained film's F⁻ᵀ) and shifted by its descan; the projector
    distortion of ``optics`` then acts on every k vector, disks included.
    """

    which: np.ndarray  # (n_y, n_x) index into the spot tables
    kx: np.ndarray  # (n_tables, P)
    ky: np.ndarray
    fraction: np.ndarray
    optics: Optics
    dose: float | None
    seed: int
    inverse_transpose: np.ndarray | None = None  # (n_y, n_x, 2, 2)
    descan: np.ndarray | None = None  # (n_y, n_x, 2): (ky, kx) shift of the beam in 1/Å

    def __call__(self, start: int, stop: int) -> np.ndarray:
        n_x = self.which.shape[1]
        which = self.which[start:stop].ravel()
        kx, ky = self.kx[which], self.ky[which]
        if self.inverse_transpose is not None:
            matrix = self.inverse_transpose[start:stop].reshape(-1, 2, 2)
            kx, ky = (matrix[:, 0, 0, None] * kx + matrix[:, 0, 1, None] * ky,
                      matrix[:, 1, 0, None] * kx + matrix[:, 1, 1, None] * ky)
        if self.descan is not None:
            shift = self.descan[start:stop].reshape(-1, 2)
            ky, kx = ky + shift[:, :1], kx + shift[:, 1:]
        radius = disk_radius(self.optics.convergence_mrad, self.optics.beam_energy_kev)
        signal = render_disks(kx, ky, self.fraction[which], detector=self.optics.detector(), radius=radius,
                              distortion=self.optics.distortion())
        return _finish_rows(signal, start, n_x, self.optics, self.dose, self.seed)


def _cube_from_rows(rows, scan_shape: tuple[int, int], pattern_shape: tuple[int, int], lazy: bool):
    """The cube built chunk by chunk of scan rows: a dask array, or the same chunks computed now (in threads)."""
    n_y, n_x = scan_shape
    if lazy:
        return _lazy_cube(rows, n_y, n_x, pattern_shape)
    out = np.empty((n_y, n_x, *pattern_shape), dtype=np.float32)

    def fill(chunk: tuple[int, int]) -> None:
        out[chunk[0]:chunk[1]] = rows(*chunk)

    chunks = _row_chunks(n_y, n_x, pattern_shape)
    with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
        list(pool.map(fill, chunks))  # numpy and scipy release the GIL; list() re-raises errors
    return out


def strained_film(
    crystal: str | Crystal | None = None,
    scan_shape: tuple[int, int] = (64, 64),
    *,
    zone_axis: tuple[int, int, int] = (0, 0, 1),
    exx: Field = None,
    eyy: Field = None,
    exy: Field = None,
    rotation: Field = None,
    heterostructure: tuple[str | Crystal, str | Crystal] | None = None,
    interface: Literal["half", "disk"] | ArrayLike = "half",
    thickness_nm: float = 5.0,
    pattern_size: int = 128,
    k_step: float = 0.025,
    beam_energy_kev: float = 300.0,
    convergence_mrad: float = 1.0,
    dose: float | None = None,
    background_fraction: float = 0.0,
    scan_step_nm: float = 2.0,
    descan: Field | None = None,
    ellipticity: tuple[float, float] | None = None,
    saturation: float | None = None,
    diffraction: str = "kinematic",
    seed: int = 0,
    lazy: bool = False,
) -> xr.Dataset:
    """A single-crystal film at a zone axis with smooth, known strain and rotation fields.

    The unstrained zone-axis spots are simulated once (:func:`simulate_kinematic`); at each
    probe position the deformation gradient ``F = V R``, ``V = I + [[exx, exy], [exy, eyy]]``,
    ``R`` the rotation by ``rotation``, moves every spot to ``g' = F⁻ᵀ g`` (DESIGN.md), and the
    kinematic intensities are kept (strain changes positions only). Noise follows Qin, Agar
    and Tran (CC-ST-AE): ``(1 - w) · pattern + w · Lorentzian``, then Poisson at ``dose``.

    Parameters
    ----------
    crystal
        The film (preset name or :class:`Crystal`); default ``"WS2"``, or the first crystal
        of ``heterostructure``.
    scan_shape
        ``(n_y, n_x)`` probe positions.
    zone_axis
        Direction ``[uvw]`` along the beam (:func:`zone_axis_rotation`).
    exx, eyy, exy, rotation
        Strain components (tensor shear) and lattice rotation (degrees, +x towards +y) of the
        film relative to its unstrained lattice: a number (uniform), an array of
        ``scan_shape``, or a function of the fractional scan position ``(y, x)`` (arrays of
        ``scan_shape``, pixel centres in (0, 1)) returning one. ``None``: the smooth default
        of :data:`DEFAULT_STRAIN_FIELDS` (Gaussian bumps and gradients of 1–2.5 % strain
        and up to ~4° of rotation).
    heterostructure
        Two crystals of one structure type, e.g. ``("WS2", "WSe2")``: the second occupies the
        ``interface`` region with its own lattice parameters and intensities, deformed by
        the same fields. The ground truth is then relative to the FIRST crystal's lattice:
        in the second crystal it combines the fields with the lattice mismatch
        (:func:`lattice_mismatch`; ``F_total = F · F_mismatch``), e.g. about +4.1 % of
        ``exx`` and ``eyy`` for WSe2 on WS2.
    interface
        Where the second crystal lies: ``"half"`` (the right half, x ≥ ½), ``"disk"`` (a
        centred disk of radius 0.3 of the scan), or a boolean array of ``scan_shape``.
    thickness_nm
        Film thickness (sets the kinematic intensities; electrons are conserved).
    pattern_size, k_step
        Detector pixels (square) and pixel size in 1/Å.
    beam_energy_kev, convergence_mrad
        Beam energy and convergence semi-angle (sets the disk radius).
    dose
        Electrons per pattern (Poisson noise); ``None``: noiseless float patterns summing to 1
        (less any disk falling off the detector).
    background_fraction
        Weight ``w`` of the Lorentzian background.
    scan_step_nm
        Probe step.
    descan, ellipticity, saturation
        Instrument imperfections, as in :func:`polycrystal`.
    diffraction
        ``"kinematic"`` (|F|² times the thickness shape factor, electrons conserved) or
        ``"bloch"`` (dynamical: :func:`~stemkit.physics.simulate_bloch` with
        :data:`BLOCH_BEAMS` beams and proportional absorption 0.05).
    seed
        Seed of the noise (row ``r`` is drawn from ``(seed, r)``).
    lazy
        Build a dask-backed cube, each chunk of scan rows rendered when computed; identical
        to the eager cube.

    Returns
    -------
    xarray.Dataset
        ``intensity`` (the canonical 4D DataArray) and ground truth on ``(scan_y, scan_x)``:
        ``exx``, ``eyy``, ``exy`` (components of ``V - I``) and ``rotation`` (degrees) of the
        lattice relative to the first crystal's unstrained lattice, and with a heterostructure
        ``material`` (crystal names).

    Examples
    --------
    >>> film = strained_film(scan_shape=(4, 4), exx=0.02, eyy=0.0, exy=0.0, rotation=0.0, pattern_size=64)
    >>> float(film.exx.mean())
    0.02
    """
    crystals = _film_crystals(crystal, heterostructure)
    optics = Optics(beam_energy_kev=beam_energy_kev, convergence_mrad=convergence_mrad, pattern_size=pattern_size,
                    k_step=k_step, background_fraction=background_fraction, ellipticity=ellipticity,
                    saturation=saturation, diffraction=diffraction)
    shifts = _descan_field(descan, scan_shape)
    fields = {name: _field(value, name, scan_shape)
              for name, value in (("exx", exx), ("eyy", eyy), ("exy", exy), ("rotation", rotation))}
    _check_strain(fields["exx"], fields["eyy"], fields["exy"])
    deformation = deformation_gradient(fields["exx"], fields["eyy"], fields["exy"], fields["rotation"])
    material = _interface_mask(interface, scan_shape) if len(crystals) == 2 else np.zeros(scan_shape, dtype=np.int64)
    k_max = _simulation_k_max(optics, deformation)
    kx, ky, fraction = _pad_stack([
        _zone_axis_spots(c, zone_axis_rotation(c, zone_axis), thickness_nm, optics, k_max) for c in crystals
    ])
    rows = _SpotRows(material, kx, ky, fraction, optics, dose, seed,
                     inverse_transpose=np.swapaxes(np.linalg.inv(deformation), -1, -2), descan=shifts)
    intensity = _cube_from_rows(rows, scan_shape, (pattern_size, pattern_size), lazy)
    truth = _film_truth(fields, deformation, material, crystals, zone_axis)
    cube = datacube(intensity, scan_step_nm=scan_step_nm, k_step=k_step, beam_energy_kev=beam_energy_kev, attrs={
        "convergence_mrad": convergence_mrad,
        "source": f"stemkit.physics.strained_film(seed={seed}, diffraction={diffraction!r})",
        "dose_electrons": -1.0 if dose is None else float(dose),
    })
    variables = {"intensity": cube} | _strain_variables(truth, SCAN_DIMS, crystals[0].name) | _descan_truth(shifts, scan_shape)
    if len(crystals) == 2:
        variables["material"] = (SCAN_DIMS, np.array([c.name for c in crystals])[material])
    return xr.Dataset(variables, attrs={
        "generator": "strained_film", "seed": seed, "crystals": [c.name for c in crystals],
        "strain_reference": crystals[0].name, "zone_axis": list(zone_axis), "thickness_nm": float(thickness_nm),
        "strain_convention": STRAIN_CONVENTION,
    })


MAX_STRAIN = 0.5


def _check_strain(exx: ArrayLike, eyy: ArrayLike, exy: ArrayLike) -> None:
    """Refuse principal strains of 50 % or more: almost surely percent given for fractions."""
    exx, eyy, exy = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (exx, eyy, exy)))
    radius = np.hypot(0.5 * (exx - eyy), exy)
    largest = float(np.max(np.abs(0.5 * (exx + eyy)) + radius, initial=0.0))
    if not largest < MAX_STRAIN:
        raise ValueError(
            f"exx, eyy and exy must be small strains; the largest principal strain is {largest:.3g}. "
            "Give strains as fractions (0.02 for 2 %), not percent."
        )


def _simulation_k_max(optics: Optics, deformation: np.ndarray) -> float:
    """Largest |g| whose strained spot can land on the detector: the corner times the largest stretch."""
    stretch = float(np.linalg.norm(deformation, ord=2, axis=(-2, -1)).max())
    radius = disk_radius(optics.convergence_mrad, optics.beam_energy_kev)
    return optics.detector().k_max() * max(1.0, stretch) + 2 * radius


def _film_truth(fields: dict[str, np.ndarray], deformation: np.ndarray, material: np.ndarray,
                crystals: list[Crystal], zone_axis: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Ground-truth strain and rotation relative to the first crystal's lattice."""
    if len(crystals) == 1:
        return fields
    mismatch = np.stack([np.eye(2), lattice_mismatch(crystals[0], crystals[1], zone_axis)])
    total = strain_from_deformation(deformation @ mismatch[material])
    return {name: np.where(material == 0, fields[name], np.round(value, 12))
            for name, value in zip(("exx", "eyy", "exy", "rotation"), total)}


def _strain_variables(truth: dict[str, np.ndarray], dims: tuple[str, ...], reference: str) -> dict[str, tuple]:
    """The ground-truth strain and rotation as Dataset variables with units and descriptions."""
    described = {
        "exx": "strain ε_xx", "eyy": "strain ε_yy", "exy": "strain ε_xy (tensor shear)",
        "rotation": "lattice rotation, +x towards +y",
    }
    return {
        name: (dims, np.asarray(truth[name], dtype=np.float64),
               {"units": "degree" if name == "rotation" else "1", "long_name": f"{text} relative to {reference}"})
        for name, text in described.items()
    }


# ---------------------------------------------------------------------------------------------
# deformed_flake
# ---------------------------------------------------------------------------------------------

REGION_FIELDS = ("exx", "eyy", "exy", "rotation", "tilt_x", "tilt_y", "thickness")


@dataclass(frozen=True)
class FlakeRegion:
    """One region of :func:`deformed_flake`: the deformation applied to its crystal's own lattice.

    Strains are tensor components of ``V - I``, angles in degrees: ``rotation`` about the
    beam (+x towards +y), ``tilt_x`` and ``tilt_y`` right-handed about the lab x and y axes.
    ``material`` indexes the flake's crystals (0: the reference, 1: the composition variant).
    """

    name: str
    material: int = 0
    exx: float = 0.0
    eyy: float = 0.0
    exy: float = 0.0
    rotation: float = 0.0
    tilt_x: float = 0.0
    tilt_y: float = 0.0
    thickness: float = 0.0
    is_vacuum: bool = False


def _flake_regions(thickness_nm: float, thick_factor: float, strain: tuple[float, float, float], rotation: float,
                   ripple_tilt: float, n_ripples: int, bend_tilt: float) -> list[FlakeRegion]:
    """The regions in label order (see :func:`deformed_flake`)."""
    exx, eyy, exy = strain
    ripples = [
        FlakeRegion(f"ripple {i + 1}", tilt_y=float(ripple_tilt * np.sin(2 * np.pi * (i + 0.5) / n_ripples)),
                    thickness=thickness_nm)
        for i in range(n_ripples)
    ]
    return [
        FlakeRegion("vacuum", material=-1, is_vacuum=True),
        FlakeRegion("reference", thickness=thickness_nm),
        FlakeRegion("strained", exx=exx, eyy=eyy, exy=exy, thickness=thickness_nm),
        FlakeRegion("rotated", rotation=rotation, thickness=thickness_nm),
        *ripples,
        FlakeRegion("thick", thickness=thickness_nm * thick_factor),
        FlakeRegion("composition", material=1, thickness=thickness_nm),
        FlakeRegion("bent", tilt_x=bend_tilt, thickness=thickness_nm),
    ]


def _flake_labels(scan_shape: tuple[int, int], n_ripples: int, rng: np.random.Generator) -> np.ndarray:
    """Region index of every probe position: a wobbly flake in vacuum, cut into bands and blocks."""
    y, x = fractional_positions(scan_shape)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    angle = np.arctan2(y - 0.5, x - 0.5)
    edge = 0.43 * (1 + 0.05 * np.sin(3 * angle + phase[0]) + 0.03 * np.sin(5 * angle + phase[1]))
    inside = np.hypot(y - 0.5, x - 0.5) < edge
    column = np.digitize(x, [0.37, 0.63])  # 0, 1, 2
    top = 1 + column  # reference, strained, rotated
    middle = 4 + np.minimum((x * n_ripples).astype(int), n_ripples - 1)
    bottom = 4 + n_ripples + column  # thick, composition, bent
    labels = np.where(y < 0.37, top, np.where(y < 0.63, middle, bottom))
    return np.where(inside, labels, 0)


def _region_orientations(regions: list[FlakeRegion], zone: np.ndarray) -> np.ndarray:
    """Crystal → lab rotations: tilt about y after tilt about x, after the in-plane rotation, at the zone axis."""
    tilt_x = axis_angle_to_matrix([1.0, 0.0, 0.0], [r.tilt_x for r in regions])
    tilt_y = axis_angle_to_matrix([0.0, 1.0, 0.0], [r.tilt_y for r in regions])
    about_beam = axis_angle_to_matrix([0.0, 0.0, 1.0], [r.rotation for r in regions])
    return tilt_y @ tilt_x @ about_beam @ zone


def _region_spots(regions: list[FlakeRegion], crystals: list[Crystal], zone_axis: tuple[int, int, int],
                  optics: Optics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots of every region (vacuum: the direct beam alone), the in-plane strain applied to their positions."""
    stretch = np.stack([np.array([[1 + r.exx, r.exy], [r.exy, 1 + r.eyy]]) for r in regions])
    k_max = _simulation_k_max(optics, stretch)
    spots: list[tuple[np.ndarray, ...]] = [(np.zeros(1), np.zeros(1), np.ones(1))] * len(regions)
    for index, crystal in enumerate(crystals):
        members = [i for i, r in enumerate(regions) if r.material == index]
        if not members:
            continue
        rotations = _region_orientations([regions[i] for i in members], zone_axis_rotation(crystal, zone_axis))
        thickness = np.array([regions[i].thickness for i in members])
        kx, ky, fraction = spot_patterns(crystal, rotations, thickness, optics, k_max=k_max)
        for row, i in enumerate(members):
            inverse = np.linalg.inv(stretch[i])  # V⁻ᵀ = V⁻¹: the rotation is already in the orientation
            keep = fraction[row] > 0
            k = inverse @ np.stack([kx[row][keep], ky[row][keep]])
            spots[i] = (k[0], k[1], fraction[row][keep])
    return _pad_stack(spots)


def _region_truth(regions: list[FlakeRegion], crystals: list[Crystal],
                  zone_axis: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Per-region ground truth; strain and rotation relative to the reference crystal's lattice."""
    table = {name: np.array([getattr(r, name) for r in regions], dtype=float) for name in REGION_FIELDS}
    mismatch = np.stack([np.eye(2), *(lattice_mismatch(crystals[0], c, zone_axis) for c in crystals[1:])])
    material = np.array([max(r.material, 0) for r in regions])
    relative = strain_from_deformation(
        deformation_gradient(table["exx"], table["eyy"], table["exy"], table["rotation"]) @ mismatch[material])
    for name, value in zip(("exx", "eyy", "exy", "rotation"), relative):
        table[name] = np.where(material == 0, table[name], np.round(value, 12))
    return table


def deformed_flake(
    crystal: str | Crystal = "WS2",
    scan_shape: tuple[int, int] = (64, 64),
    *,
    composition: str | Crystal = "WSe2",
    zone_axis: tuple[int, int, int] = (0, 0, 1),
    thickness_nm: float = 5.0,
    thick_factor: float = 3.0,
    strain: tuple[float, float, float] = (0.02, -0.01, 0.005),
    rotation: float = 6.0,
    ripple_tilt: float = 1.5,
    n_ripples: int = 6,
    bend_tilt: float = 1.0,
    pattern_size: int = 128,
    k_step: float = 0.025,
    beam_energy_kev: float = 300.0,
    convergence_mrad: float = 1.0,
    dose: float | None = 1e5,
    background_fraction: float = 0.05,
    scan_step_nm: float = 2.0,
    diffraction: str = "kinematic",
    seed: int = 0,
    lazy: bool = False,
) -> xr.Dataset:
    """A flake in vacuum whose regions differ in strain, rotation, tilt, thickness and composition.

    Layout, in fractions of the scan: a flake of radius ~0.43 with a wobbly edge (its phase
    drawn from ``seed``) in vacuum. Inside it, the top band (y < 0.37) holds, left to right,
    ``reference`` (the crystal at the zone axis, ``thickness_nm``), ``strained`` (uniform
    ``strain``) and ``rotated`` (``rotation`` about the beam); the middle band is a ripple of
    ``n_ripples`` stripes along x, stripe ``i`` tilted about the lab y axis by
    ``ripple_tilt · sin(2π (i + ½) / n_ripples)``; the bottom band (y >= 0.63) holds
    ``thick`` (``thick_factor`` times thicker), ``composition`` (the ``composition`` crystal,
    epitaxial with the reference) and ``bent`` (tilted by ``bend_tilt`` about the lab x axis).

    Each region is uniform: its crystal is oriented in 3D (tilt about y after tilt about x,
    after the rotation about the beam, at ``zone_axis``) and simulated kinematically, so
    tilts change excitation errors and hence intensities (bend contours) while moving
    spots only by the projection, ``1 - cos(tilt)`` (~3e-4 at 1.5°); the in-plane strain
    then moves the spots, ``g' = V⁻¹ g``. Vacuum patterns hold only the direct beam (plus
    the background). Noise: ``(1 - w) · pattern + w · Lorentzian``, Poisson at ``dose``.

    Parameters
    ----------
    crystal
        The flake's (reference) crystal, a preset name or :class:`Crystal`.
    scan_shape
        ``(n_y, n_x)`` probe positions; on very small scans some regions may hold no pixel.
    composition
        The crystal of the ``composition`` region, of the same structure type as ``crystal``.
    zone_axis
        Direction ``[uvw]`` along the beam for the untilted regions.
    thickness_nm, thick_factor
        Thickness of every region but ``thick``, which is ``thick_factor`` times it.
    strain
        ``(exx, eyy, exy)`` of the ``strained`` region (tensor shear).
    rotation
        Rotation of the ``rotated`` region about the beam, degrees (+x towards +y).
    ripple_tilt, n_ripples
        Largest tilt (degrees) and number of stripes of the ripple.
    bend_tilt
        Tilt of the ``bent`` region about the lab x axis, degrees.
    pattern_size, k_step, beam_energy_kev, convergence_mrad
        Detector and beam, as in :func:`polycrystal`.
    dose
        Electrons per pattern (Poisson noise); ``None`` for noiseless patterns.
    background_fraction
        Weight ``w`` of the Lorentzian background (also in vacuum).
    scan_step_nm
        Probe step.
    diffraction
        ``"kinematic"`` (|F|² times the thickness shape factor, electrons conserved) or
        ``"bloch"`` (dynamical: :func:`~stemkit.physics.simulate_bloch` with
        :data:`BLOCH_BEAMS` beams and proportional absorption 0.05).
    seed
        Seed of the flake's outline and of the noise (row ``r`` from ``(seed, r)``).
    lazy
        Build a dask-backed cube (chunks of whole scan rows), identical to the eager one.

    Returns
    -------
    xarray.Dataset
        ``intensity`` (the canonical 4D DataArray); ``region`` (the label of every probe
        position, on ``(scan_y, scan_x)``); and the per-region table on dim ``region_id``
        (``region_id`` = the label): ``region_name``, ``material`` (crystal name or
        ``"vacuum"``), ``is_vacuum``, ``exx``, ``eyy``, ``exy`` and ``rotation`` of the lattice
        relative to the reference crystal's unstrained lattice (the ``composition`` region
        carries its lattice mismatch, e.g. +4.1 % for WSe2 on WS2), ``tilt_x``, ``tilt_y``
        (degrees; the strain ignores the projection of a tilt) and ``thickness`` (nm; 0 in
        vacuum). Maps: ``ds.exx.sel(region_id=ds.region)``.
    """
    if int(n_ripples) < 1:
        raise ValueError(f"n_ripples must be a positive integer; got {n_ripples!r}.")
    _check_strain(*strain)
    crystals = [_as_crystal(crystal), _as_crystal(composition)]
    optics = Optics(beam_energy_kev=beam_energy_kev, convergence_mrad=convergence_mrad, pattern_size=pattern_size,
                    k_step=k_step, background_fraction=background_fraction, diffraction=diffraction)
    regions = _flake_regions(thickness_nm, thick_factor, strain, rotation, ripple_tilt, int(n_ripples), bend_tilt)
    labels = _flake_labels(scan_shape, int(n_ripples), np.random.default_rng(seed))
    table = _region_truth(regions, crystals, zone_axis)
    patterns = _rendered(_region_spots(regions, crystals, zone_axis, optics), optics)
    intensity = noisy_cube(patterns, labels, optics, dose=dose, seed=seed, lazy=lazy)
    cube = datacube(intensity, scan_step_nm=scan_step_nm, k_step=k_step, beam_energy_kev=beam_energy_kev, attrs={
        "convergence_mrad": convergence_mrad,
        "source": f"stemkit.physics.deformed_flake(seed={seed}, diffraction={diffraction!r})",
        "dose_electrons": -1.0 if dose is None else float(dose),
    })
    return xr.Dataset(
        {"intensity": cube, "region": (SCAN_DIMS, labels, {"long_name": "region label (index into region_id)"})}
        | _table_variables(table, regions, crystals),
        coords={"region_id": np.arange(len(regions))},
        attrs={"generator": "deformed_flake", "seed": seed, "crystals": [c.name for c in crystals],
               "strain_reference": crystals[0].name, "zone_axis": list(zone_axis),
               "strain_convention": STRAIN_CONVENTION},
    )


def _rendered(spots: tuple[np.ndarray, np.ndarray, np.ndarray], optics: Optics) -> np.ndarray:
    """Noiseless, blurred patterns with the background of spot lists ``(kx, ky, fraction)``."""
    detector = optics.detector()
    radius = disk_radius(optics.convergence_mrad, optics.beam_energy_kev)
    signal = render_disks(*spots, detector=detector, radius=radius)
    background = lorentzian_background(detector, optics.background_width) if optics.background_fraction > 0 else None
    return finish_patterns(signal, detector=detector, background=background,
                           background_fraction=optics.background_fraction)


def _table_variables(table: dict[str, np.ndarray], regions: list[FlakeRegion],
                     crystals: list[Crystal]) -> dict[str, tuple]:
    """The per-region table as Dataset variables on ``region_id``."""
    dims = ("region_id",)
    variables = _strain_variables(table, dims, crystals[0].name)
    variables |= {
        "tilt_x": (dims, table["tilt_x"], {"units": "degree", "long_name": "tilt about the lab x axis"}),
        "tilt_y": (dims, table["tilt_y"], {"units": "degree", "long_name": "tilt about the lab y axis"}),
        "thickness": (dims, table["thickness"], {"units": "nm"}),
        "region_name": (dims, np.array([r.name for r in regions])),
        "material": (dims, np.array(["vacuum" if r.is_vacuum else crystals[r.material].name for r in regions])),
        "is_vacuum": (dims, np.array([r.is_vacuum for r in regions])),
    }
    return variables
