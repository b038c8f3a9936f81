"""Dynamical electron diffraction by the Bloch-wave method, batched over orientations.

Real nanocrystals tens of nanometres thick scatter dynamically: intensities swing with
thickness (pendellösung), kinematically forbidden reflections appear by double
diffraction, and |F|² stops predicting which spots are bright. This module computes the
diffracted-beam intensities of a parallel-sided foil for many orientations and many
thicknesses at once.

Physics (conventions of :mod:`stemkit.physics.kinematic`: beam along +z, ``K = 1/λ``,
reciprocal lengths in 1/Å without 2π, ``s_g`` positive inside the Ewald sphere)
---------------------------------------------------------------------------------
- The crystal potential's Fourier coefficients, in the units of the Schrödinger equation
  ``∇²ψ + 4π² (K² + U(r)) ψ = 0``, are ``U_g = γ F(g) / (π V)`` (Å⁻²), with ``F`` the
  electron structure factor of :meth:`Crystal.structure_factor` (Lobato & Van Dyck
  scattering factors, the atoms' Debye–Waller factors) and ``γ`` the relativistic factor.
  The extinction distance is ``ξ_g = K / |U_g|``.
- In the forward-scattering (high-energy) approximation the amplitudes ``φ_g(z)`` of the
  beams obey ``dφ/dz = iπ A φ`` with the structure matrix
  ``A_gg = 2 s_g`` and ``A_gh = U*_{g-h} / K`` (Howie–Whelan form; the conjugate because ``F`` carries
  the crystallographic ``exp(+2πi g·r)``, so the potential is ``Σ U_g exp(-2πi g·r)``; checked against
  abTEM on non-centrosymmetric ZnS, ``benchmarks/bloch/``; the mean inner potential
  ``U_0`` only adds a common phase and is left out). With ``A = C Λ C^H`` (Hermitian),
  ``φ(t) = C exp(iπ Λ t) C^H e_0``: every thickness costs one small matrix product.
- Absorption (thermal diffuse and inelastic scattering out of the Bragg beams): the
  proportional model, an imaginary potential ``U'(r) = κ U(r)`` (``absorption=κ``, about
  0.03–0.1 for metals at room temperature), taken to first order (Hirsch et al.): Bloch
  wave ``j`` decays as ``exp(-π q_j t)`` with ``q_j = C_j^H A' C_j``, ``A'_gh = κ U_{g-h} / K``
  including ``U_0``. This gives anomalous absorption (Borrmann effect); with ``κ = 0``
  the intensities of all beams add up to 1.
- Beams: every reciprocal-lattice point that can carry intensity (its own ``U_g ≠ 0`` or
  one reached from an allowed reflection by one more allowed reflection, so that glide-
  and screw-forbidden reflections appear by double diffraction while lattice-centring
  absences stay absent), within ``k_max`` of the beam on the detector and with
  ``|s_g| <= s_max``; per orientation the ``n_beams - 1`` of smallest ``|s_g|`` join the
  direct beam (a shell of equal ``|s_g|`` that does not fit whole is left out whole, so a
  zone axis keeps its symmetry).
- Limits, tested in ``tests/physics/test_bloch.py``: a thin foil reproduces the
  kinematic ``(π t |U_g| / K)² sinc²(π t s_g)`` of :func:`~stemkit.physics.simulate_kinematic`;
  two beams give the analytic two-beam pendellösung; a zone axis keeps the projected symmetry.
- Not modelled: the tilt of the foil normal from the beam (the foil is normal to the
  beam), HOLZ curvature beyond the exact ``s_g``, back-scattering, and the diffuse
  background itself (the renderer adds one).

Cost: one Hermitian eigen-decomposition of an ``n_beams`` square matrix per orientation
(real symmetric when the crystal's origin is a centre of symmetry); measured rates are in
``benchmarks/RESULTS.md`` (``bash benchmarks/bloch/run.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stemkit.data.units import wavelength_angstrom
from stemkit.physics.crystal import Crystal
from stemkit.physics.kinematic import _excitation_error_from_gz
from stemkit.physics.reflections import _lattice_points
from stemkit.physics.rotations import as_rotation_matrices
from stemkit.physics.scattering import relativistic_factor

__all__ = ["BlochPatterns", "potential_coefficients", "propagate", "simulate_bloch", "structure_matrix"]

DEFAULT_CHUNK_SIZE = 128
COUPLING_TOLERANCE = 1e-6  # |F| below this fraction of the largest counts as zero (an absence)
CANDIDATE_STEP = 0.25  # 1/Å: the radius of the candidate beams is rounded up to this (shared across energies)
SHELL_TOLERANCE = 1e-6  # relative: |s| closer than this to the first beam left out belong to its shell
PADDING_EXCITATION_ERROR = 10.0  # 1/Å, the s of padding beams: decoupled, never excited, beyond every real s


@dataclass(frozen=True)
class BlochPatterns:
    """Dynamical diffraction of a batch of N orientations at T thicknesses, P beams each.

    Attributes
    ----------
    kx, ky
        Positions of the diffracted beams on the detector, 1/Å from the direct beam, (N, P).
    excitation_error
        ``s_g`` in 1/Å, (N, P).
    hkl
        Miller indices, (N, P, 3); zeros for padding.
    valid
        True for a beam, False for padding, (N, P).
    intensity
        Fraction of the incident beam in each diffracted beam, (N, T, P); 0 for padding.
    direct_beam
        Fraction of the incident beam left in the direct beam, (N, T).
    thickness_angstrom
        The thicknesses, (T,), or (N, T) when they were given per orientation.
    beam_energy_kev, absorption, n_beams, crystal_name
        What was simulated.
    """

    kx: NDArray[np.float64]
    ky: NDArray[np.float64]
    excitation_error: NDArray[np.float64]
    hkl: NDArray[np.int64]
    valid: NDArray[np.bool_]
    intensity: NDArray[np.float64]
    direct_beam: NDArray[np.float64]
    thickness_angstrom: NDArray[np.float64]
    beam_energy_kev: float
    absorption: float
    n_beams: int
    crystal_name: str

    @property
    def n_patterns(self) -> int:
        """N."""
        return self.kx.shape[0]

    def at_thickness(self, index: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Diffracted and direct-beam fractions at one thickness per pattern.

        Parameters
        ----------
        index
            Index into :attr:`thickness_angstrom`, one per pattern (N,) or one for all.

        Returns
        -------
        intensity, direct_beam
            (N, P) and (N,).
        """
        rows = np.arange(self.n_patterns)
        index = np.broadcast_to(np.asarray(index, dtype=int), rows.shape)
        return self.intensity[rows, index], self.direct_beam[rows, index]

    def to_dataset(self) -> Any:
        """An ``xarray.Dataset`` on ``("pattern", "thickness", "peak")`` (coordinate ``thickness_angstrom``)."""
        import xarray as xr

        dims = ("pattern", "peak")
        variables = {
            "kx": (dims, self.kx, {"units": "1/Å"}),
            "ky": (dims, self.ky, {"units": "1/Å"}),
            "excitation_error": (dims, self.excitation_error, {"units": "1/Å"}),
            "valid": (dims, self.valid),
            "h": (dims, self.hkl[..., 0]), "k": (dims, self.hkl[..., 1]), "l": (dims, self.hkl[..., 2]),
            "intensity": (("pattern", "thickness", "peak"), self.intensity, {"units": "fraction of the incident beam"}),
            "direct_beam": (("pattern", "thickness"), self.direct_beam, {"units": "fraction of the incident beam"}),
        }
        attrs = {"beam_energy_kev": self.beam_energy_kev, "crystal": self.crystal_name, "method": "bloch",
                 "absorption": self.absorption, "n_beams": self.n_beams}
        dims = ("thickness",) if self.thickness_angstrom.ndim == 1 else ("pattern", "thickness")
        coords = {"thickness_angstrom": (dims, self.thickness_angstrom, {"units": "Å"})}
        return xr.Dataset(variables, coords=coords, attrs=attrs)


@dataclass(frozen=True)
class _PotentialTable:
    """``U_g / K`` on a cube of Miller indices, for looking up every ``U_{g-h}`` of a structure matrix."""

    values: NDArray[np.complexfloating]  # (2H+1, 2H+1, 2H+1) indexed by hkl + H; real when every U_g is
    half_width: NDArray[np.int64]  # H per axis
    mean: float  # U_0 / K (enters only the absorption)

    def at(self, hkl: NDArray[np.int64]) -> NDArray:
        """The table's values at Miller indices ``hkl`` (..., 3), each within ``±H``."""
        width = 2 * self.half_width + 1
        shifted = hkl + self.half_width
        flat = (shifted[..., 0] * width[1] + shifted[..., 1]) * width[2] + shifted[..., 2]
        return np.take(self.values.ravel(), flat)


@dataclass(frozen=True)
class _Candidates:
    """The beams that can carry intensity, crystal frame."""

    hkl: NDArray[np.int64]  # (M, 3)
    g: NDArray[np.float64]  # (3, M)
    g_squared: NDArray[np.float64]  # (M,)


def potential_coefficients(crystal: Crystal, hkl: ArrayLike, beam_energy_kev: float) -> NDArray[np.complex128]:
    """Fourier coefficients ``U_g = γ F(g) / (π V)`` of the crystal potential, in Å⁻².

    ``K / |U_g|`` is the extinction distance ``ξ_g`` (Å) of reflection ``g``.

    Examples
    --------
    >>> from stemkit.physics import crystal
    >>> from stemkit.data.units import wavelength_angstrom
    >>> u = potential_coefficients(crystal("Cu"), [2, 0, 0], 200.0)
    >>> round(float(1 / (wavelength_angstrom(200.0) * abs(u))))  # ξ_200 of Cu at 200 kV, Å (B = 0.55 Å²)
    428
    """
    factor = crystal.structure_factor(hkl, beam_energy_kev)
    return factor / (np.pi * crystal.volume)


def _rest_table(crystal: Crystal, half_width: tuple[int, int, int]) -> _PotentialTable:
    """``F / (π V)`` (rest mass, no beam) on a cube of Miller indices; cached on the crystal."""
    key = ("bloch-rest-potential", half_width)
    cached = crystal._cache.get(key)
    if cached is not None:
        return cached
    axes = [np.arange(-h, h + 1) for h in half_width]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    # F(g) = Σ f exp(+2πi g·r) (crystallographic sign), so the potential is Σ U_g exp(-2πi g·r): the
    # coefficient of exp(+2πi g·r) that couples beams is U_{-g} = conj(U_g) (matters without a centre of symmetry)
    values = np.conj(crystal.structure_factor(hkl)) / (np.pi * crystal.volume)
    largest = np.abs(values).max()
    values[np.abs(values) < COUPLING_TOLERANCE * largest] = 0.0
    mean = float(values[half_width].real)
    values[half_width] = 0.0
    real = bool(np.all(np.abs(values.imag) <= 1e-9 * largest))  # then the structure matrix is real symmetric
    table = _PotentialTable(values=values.real.copy() if real else values, half_width=np.asarray(half_width),
                            mean=mean)
    crystal._cache[key] = table
    return table


def _potential_table(crystal: Crystal, beam_energy_kev: float, half_width: ArrayLike) -> _PotentialTable:
    """``U_g / K = γ λ F / (π V)`` of the beam on a cube of Miller indices (the mean ``U_0 / K`` apart)."""
    rest = _rest_table(crystal, tuple(int(h) for h in half_width))
    scale = relativistic_factor(beam_energy_kev) * wavelength_angstrom(beam_energy_kev)
    return _PotentialTable(values=rest.values * scale, half_width=rest.half_width, mean=rest.mean * scale)


def _candidates(crystal: Crystal, g_cap: float) -> _Candidates:
    """Lattice points within ``g_cap`` that can be excited (allowed, or one allowed step from an allowed one).

    ``g_cap`` is rounded up to a multiple of :data:`CANDIDATE_STEP` so that beam energies share the result.
    """
    g_cap = CANDIDATE_STEP * np.ceil(g_cap / CANDIDATE_STEP)
    key = ("bloch-candidates", float(g_cap))
    cached = crystal._cache.get(key)
    if cached is not None:
        return cached
    hkl = _lattice_points(crystal, g_cap)
    table = _rest_table(crystal, tuple(int(h) for h in 2 * np.max(np.abs(hkl), axis=0)))
    allowed = np.abs(table.at(hkl)) > 0
    reachable = allowed | _reached_in_one_step(hkl, allowed, table)
    hkl = hkl[reachable]
    g = crystal.g_vectors(hkl)
    result = _Candidates(hkl=hkl, g=np.ascontiguousarray(g.T), g_squared=np.sum(g**2, axis=1))
    crystal._cache[key] = result
    return result


def _reached_in_one_step(hkl: NDArray, allowed: NDArray, table: _PotentialTable) -> NDArray:
    """For each point f of ``hkl``: is there an allowed point a with ``U(f - a) ≠ 0``?

    A convolution of the allowed points' indicator with the coupling's (by FFT: memory of a few
    grids, where comparing every pair of points would need gigabytes for large ``k_max``).
    """
    half = np.max(np.abs(hkl), axis=0)
    points = np.zeros(tuple(2 * half + 1))
    chosen = hkl[allowed] + half
    points[chosen[:, 0], chosen[:, 1], chosen[:, 2]] = 1.0
    coupling = (np.abs(table.values) > 0).astype(float)  # on [-2H, 2H] per axis
    shape = tuple(int(n) for n in np.array(points.shape) + np.array(coupling.shape) - 1)
    axes = (0, 1, 2)
    counts = np.fft.irfftn(np.fft.rfftn(points, shape, axes) * np.fft.rfftn(coupling, shape, axes), shape, axes)
    index = hkl + half + table.half_width  # f + H + 2H in the full convolution
    return counts[index[:, 0], index[:, 1], index[:, 2]] > 0.5


def structure_matrix(excitation_error: ArrayLike, hkl: ArrayLike, crystal: Crystal, beam_energy_kev: float,
                     valid: ArrayLike | None = None) -> NDArray:
    """The Bloch-wave structure matrix ``A`` of each orientation, (B, n, n).

    Parameters
    ----------
    excitation_error
        ``s_g`` (1/Å) of the beams, (B, n); beam 0 is the direct beam (``s = 0``).
    hkl
        Their Miller indices, (B, n, 3) (000 first).
    crystal, beam_energy_kev
        The crystal and the beam.
    valid
        False for padding beams (decoupled, never excited), (B, n).

    Returns
    -------
    numpy.ndarray
        ``A_gg = 2 s_g``, ``A_gh = U*_{g-h} / K`` (see the module docstring); real symmetric or
        complex Hermitian.
    """
    hkl = np.asarray(hkl, dtype=np.int64)
    s = np.asarray(excitation_error, dtype=float)
    difference = hkl[:, :, None, :] - hkl[:, None, :, :]
    half_width = np.max(np.abs(difference).reshape(-1, 3), axis=0) if difference.size else np.zeros(3, int)
    table = _potential_table(crystal, beam_energy_kev, np.maximum(half_width, 1))
    return _assemble(s, difference, table, None if valid is None else np.asarray(valid, bool))


def _assemble(s: NDArray, difference: NDArray, table: _PotentialTable, valid: NDArray | None) -> NDArray:
    matrix = table.at(difference)
    if valid is not None:
        matrix = matrix * (valid[:, :, None] & valid[:, None, :])
        s = np.where(valid, s, PADDING_EXCITATION_ERROR)
    diagonal = np.arange(s.shape[1])
    matrix[:, diagonal, diagonal] = 2.0 * s
    return matrix


def propagate(matrix: NDArray, thickness: ArrayLike, absorption_matrix: NDArray | None = None,
              precision: str = "double") -> NDArray:
    """Beam amplitudes ``φ(t) = C exp(iπ (Λ + i q) t) C^H e_0`` at every thickness.

    Parameters
    ----------
    matrix
        Structure matrices (B, n, n), Hermitian, beam 0 the incident one.
    thickness
        Thicknesses in Å, (T,), or (B, T) for thicknesses of each orientation.
    absorption_matrix
        The absorptive potential ``A'`` (B, n, n) or None; its Bloch-wave expectation values
        ``q_j`` damp each Bloch wave as ``exp(-π q_j t)`` (first-order perturbation).
    precision
        ``"double"`` (default) or ``"single"``: the eigen-decomposition in single precision is
        about twice as fast and good to ~1e-5 of the incident beam (for making training data).

    Returns
    -------
    numpy.ndarray
        Complex amplitudes (B, T, n); ``|φ|²`` are fractions of the incident beam.
    """
    thickness = np.atleast_1d(np.asarray(thickness, dtype=float))
    thickness = thickness[None, :, None] if thickness.ndim == 1 else thickness[:, :, None]
    eigenvalues, vectors = _eigh(matrix, precision)
    phase = 1j * np.pi * eigenvalues[:, None, :] * thickness
    if absorption_matrix is not None:
        decay = np.sum(vectors.conj() * (absorption_matrix @ vectors), axis=1).real
        phase = phase - np.pi * decay[:, None, :] * thickness
    excitation = vectors[:, 0, :].conj()  # C^H e_0: how much of each Bloch wave the incident beam excites
    return (np.exp(phase) * excitation[:, None, :]) @ np.swapaxes(vectors, 1, 2)


def _eigh(matrix: NDArray, precision: str) -> tuple[NDArray, NDArray]:
    """Batched Hermitian eigen-decomposition (torch's batched LAPACK is ~2x numpy's loop), in float64 out."""
    import torch

    if precision not in ("double", "single"):
        raise ValueError(f"precision must be 'double' or 'single'; got {precision!r}.")
    tensor = torch.from_numpy(np.ascontiguousarray(matrix))
    if precision == "single":
        tensor = tensor.to(torch.complex64 if tensor.is_complex() else torch.float32)
    eigenvalues, vectors = torch.linalg.eigh(tensor)
    vectors = vectors.numpy()
    return eigenvalues.numpy().astype(float), vectors.astype(np.complex128 if vectors.dtype.kind == "c" else float)


def simulate_bloch(
    crystal: Crystal,
    orientations: ArrayLike,
    *,
    beam_energy_kev: float,
    thickness: ArrayLike,
    k_max: float = 2.0,
    n_beams: int = 64,
    s_max: float = 0.2,
    absorption: float = 0.05,
    precision: str = "double",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> BlochPatterns:
    """Dynamical (Bloch-wave) diffraction of ``crystal`` for a batch of orientations and thicknesses.

    Parameters
    ----------
    crystal
        The crystal (3D; a single layer scatters as a thin phase object: use the kinematic model).
    orientations
        Rotation matrices (N, 3, 3) or scalar-first quaternions (N, 4), crystal → lab
        (``g_lab = R @ g_crystal``); a single one is a batch of one.
    beam_energy_kev
        Beam energy in keV.
    thickness
        Foil thickness(es) in Å, one number or a list (T,): all are computed at once; or
        (N, T), thicknesses of each orientation (e.g. (N, 1): one thickness per pattern).
    k_max
        Largest distance of a beam from the direct beam on the detector, 1/Å.
    n_beams
        Beams in the calculation, the direct beam included (cost grows as ``n_beams³``).
        Measured against abTEM multislice (``benchmarks/RESULTS.md``): off a zone axis,
        ``k_max=4`` and a few hundred beams agree within 0.01 of the incident beam to 40 nm;
        the fast setting (``k_max=2``, 64-96 beams) is good to ~0.01 up to ~5 nm but errs by
        up to 0.05-0.16 in thick foils, and exactly on a zone axis upper-Laue-zone beams need
        ``s_max`` of ~1.5 1/Å to converge.
    s_max
        Largest ``|s_g|`` of a beam, 1/Å.
    absorption
        ``κ`` of the proportional absorption model ``U' = κ U`` (0: none, the beams' intensities add to 1).
    precision
        ``"double"`` or ``"single"`` (faster; ~1e-5 of the incident beam, for training data).
    chunk_size
        Orientations per vectorised step (memory ~ 16 bytes × chunk × n_beams² × a few).

    Returns
    -------
    BlochPatterns
        Positions, Miller indices and intensities (fractions of the incident beam) of the
        ``n_beams - 1`` diffracted beams of each orientation at each thickness.

    Examples
    --------
    >>> import numpy as np
    >>> from stemkit.physics import crystal
    >>> patterns = simulate_bloch(crystal("Cu"), np.eye(3), beam_energy_kev=200, thickness=[100, 300],
    ...                           absorption=0.0)
    >>> total = patterns.direct_beam + patterns.intensity.sum(axis=-1)  # electrons are conserved
    >>> np.allclose(total, 1.0)
    True
    """
    rotations = as_rotation_matrices(orientations).astype(float)
    thickness = _checked_thickness(thickness, len(rotations))
    _check_arguments(crystal, beam_energy_kev, k_max, n_beams, s_max, absorption)
    k = 1.0 / wavelength_angstrom(beam_energy_kev)
    candidates = _candidates(crystal, float(np.hypot(k_max, s_max + k_max**2 / k)))
    half_width = 2 * np.max(np.abs(candidates.hkl), axis=0) if len(candidates.hkl) else np.ones(3, int)
    table = _potential_table(crystal, beam_energy_kev, np.maximum(half_width, 1))
    chunk_size = max(1, int(chunk_size))
    per_pattern = thickness.ndim == 2
    parts = [_simulate_chunk(rotations[start:start + chunk_size], candidates, table, k,
                             thickness[start:start + chunk_size] if per_pattern else thickness, k_max, n_beams,
                             s_max, absorption, precision)
             for start in range(0, len(rotations), chunk_size)]
    fields = [np.concatenate([part[i] for part in parts]) if parts else None for i in range(7)]
    if not parts:
        p = n_beams - 1
        fields = [np.zeros((0, p)), np.zeros((0, p)), np.zeros((0, p)), np.zeros((0, p, 3), np.int64),
                  np.zeros((0, p), bool), np.zeros((0, thickness.shape[-1], p)), np.zeros((0, thickness.shape[-1]))]
    kx, ky, s, hkl, valid, intensity, direct = fields
    return BlochPatterns(kx=kx, ky=ky, excitation_error=s, hkl=hkl, valid=valid, intensity=intensity,
                         direct_beam=direct, thickness_angstrom=thickness, beam_energy_kev=float(beam_energy_kev),
                         absorption=float(absorption), n_beams=int(n_beams), crystal_name=crystal.name)


def _checked_thickness(thickness: ArrayLike, n: int) -> NDArray[np.float64]:
    values = np.atleast_1d(np.asarray(thickness, dtype=float))
    shape_ok = values.ndim == 1 or (values.ndim == 2 and values.shape[0] == n)
    if not shape_ok or values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"thickness must be one or more finite, non-negative foil thicknesses in Å, (T,) for every "
                         f"orientation or (N, T) = ({n}, T) per orientation (e.g. [50, 100, 200]); got "
                         f"{np.shape(thickness)} {thickness!r}."[:400])
    return values


def _check_arguments(crystal: Crystal, beam_energy_kev: float, k_max: float, n_beams: int, s_max: float,
                     absorption: float) -> None:
    if crystal.is_layer:
        raise ValueError(f"{crystal.name} is a single layer: it scatters as a thin phase object, which the "
                         "kinematic model (simulate_kinematic) describes; the Bloch-wave method needs a 3D crystal.")
    if not beam_energy_kev > 0:
        raise ValueError(f"beam_energy_kev must be positive (e.g. 200); got {beam_energy_kev!r}.")
    if not (k_max > 0 and s_max > 0):
        raise ValueError(f"k_max and s_max must be positive reciprocal lengths in 1/Å; got {k_max!r}, {s_max!r}.")
    if int(n_beams) < 2:
        raise ValueError(f"n_beams counts the direct beam and must be at least 2; got {n_beams!r}.")
    if not 0 <= absorption < 1:
        raise ValueError(f"absorption is the ratio κ = U'/U of the proportional model, in [0, 1) "
                         f"(about 0.05 for metals); got {absorption!r}.")


def _select_beams(rotations: NDArray, candidates: _Candidates, k: float, k_max: float, n_beams: int,
                  s_max: float) -> tuple[NDArray, ...]:
    """Per orientation the ``n_beams - 1`` eligible candidates of smallest |s|: positions, s, hkl, valid."""
    g_lab = np.einsum("bij,jm->bim", rotations, candidates.g)
    s = _excitation_error_from_gz(g_lab[:, 2], np.broadcast_to(candidates.g_squared, g_lab[:, 2].shape), k)
    eligible = (np.hypot(g_lab[:, 0], g_lab[:, 1]) <= k_max) & (np.abs(s) <= s_max)
    key = np.where(eligible, np.abs(s), np.inf)
    count = min(n_beams - 1, key.shape[1])
    chosen = np.argpartition(key, count - 1, axis=1)[:, :count] if count < key.shape[1] else \
        np.broadcast_to(np.arange(key.shape[1]), key.shape).copy()
    chosen = np.take_along_axis(chosen, np.argsort(np.take_along_axis(key, chosen, 1), axis=1), 1)
    take = lambda values: np.take_along_axis(values, chosen, axis=1)  # noqa: E731
    valid = take(eligible)
    if count < key.shape[1]:
        # never split a shell of equal |s| (a symmetric family at a zone axis): drop it whole
        first_left_out = np.partition(key, count, axis=1)[:, count:count + 1]
        valid &= take(key) < first_left_out * (1 - SHELL_TOLERANCE) - 1e-12
    kx, ky, s_chosen = (np.where(valid, take(values), 0.0) for values in (g_lab[:, 0], g_lab[:, 1], s))
    hkl = np.where(valid[..., None], candidates.hkl[chosen], 0)
    width = n_beams - 1
    if count < width:
        pad = ((0, 0), (0, width - count))
        kx, ky, s_chosen, valid = (np.pad(a, pad) for a in (kx, ky, s_chosen, valid))
        hkl = np.pad(hkl, pad + ((0, 0),))
    return kx, ky, s_chosen, hkl, valid


def _simulate_chunk(rotations: NDArray, candidates: _Candidates, table: _PotentialTable, k: float,
                    thickness: NDArray, k_max: float, n_beams: int, s_max: float, absorption: float,
                    precision: str) -> tuple:
    kx, ky, s, hkl, valid = _select_beams(rotations, candidates, k, k_max, n_beams, s_max)
    n = len(rotations)
    all_hkl = np.concatenate([np.zeros((n, 1, 3), np.int64), hkl], axis=1)
    all_s = np.concatenate([np.zeros((n, 1)), s], axis=1)
    all_valid = np.concatenate([np.ones((n, 1), bool), valid], axis=1)
    difference = all_hkl[:, :, None, :] - all_hkl[:, None, :, :]
    matrix = _assemble(all_s, difference, table, all_valid)
    absorbing = None
    if absorption > 0:  # κ times the same couplings, with the mean potential U_0 on the diagonal
        absorbing = absorption * matrix
        diagonal = np.arange(all_s.shape[1])
        absorbing[:, diagonal, diagonal] = absorption * table.mean * all_valid
    amplitude = propagate(matrix, thickness, absorbing, precision)
    fraction = np.abs(amplitude) ** 2
    intensity = np.where(valid[:, None, :], fraction[:, :, 1:], 0.0)
    return kx, ky, s, hkl, valid, intensity, fraction[:, :, 0]
