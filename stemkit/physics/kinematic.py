"""Batched kinematic electron diffraction: spot positions, excitation errors and intensities.

Geometry (lab frame of DESIGN.md; all reciprocal lengths in 1/Å, no 2π)
-----------------------------------------------------------------------
- The beam travels along +z with wave vector ``k0 = (0, 0, K)``, ``K = 1/λ``. A crystal
  in orientation ``R`` has its reflection ``g`` at ``g_lab = R @ g_crystal``; the
  diffracted beam ``k0 + g_lab`` meets the detector at ``(kx, ky) = (g_lab[0], g_lab[1])``
  (the small-angle, flat-detector projection used by every 4D-STEM calibration).
- The Ewald sphere, ``|k0 + g| = K``, is centred at ``-k0 = (0, 0, -K)`` and passes
  through the origin.
- The excitation error ``s_g`` is the distance along the beam (z, the foil normal of an
  untilted foil) from the reciprocal-lattice point to the sphere: ``k0 + g + s_g ẑ`` lies
  on it. Exactly,

  .. math:: s_g = \\sqrt{K^2 - g_x^2 - g_y^2} - (K + g_z)
                = -\\frac{g_x^2 + g_y^2}{K + \\sqrt{K^2 - g_x^2 - g_y^2}} - g_z

  (the second form is the one computed: it keeps float32 precise). ``s_g > 0`` when the
  point lies inside the sphere, ``s_g = 0`` at the Bragg condition, and at an exact zone
  axis (``g_z = 0``) ``s_g ≈ -λ g²/2 < 0``.
- Intensity: ``γ² |F(g)|²`` (Å²; :meth:`Crystal.structure_factor` with the beam's
  relativistic factor γ) times a shape factor that is 1 at ``s = 0``:

  - ``thickness=t`` (Å), a parallel-sided foil normal to the beam:
    ``(sin(π t s)/(π t s))²``.
  - ``excitation_error_width=σ`` (1/Å): ``exp(-s²/(2σ²))``, a smooth stand-in for
    finite thickness, beam convergence and mosaic spread.

- Absolute scale (:meth:`KinematicPatterns.beam_fraction`): the kinematic fraction of
  the incident beam in a reflection is the intensity times ``(λ t / V)²`` for a foil of
  thickness t (V the cell volume; equivalently ``(π t / ξ_g)²`` at s = 0 with the
  extinction distance ``ξ_g = π V / (λ γ |F|)``), valid while it stays << 1. For a single
  layer (:attr:`Crystal.is_layer`) it is the intensity times ``(λ / A)²`` with
  ``A = V / c`` the layer's cell area, whatever the thickness; give such a layer its
  physical thickness (~3 Å), which keeps its reciprocal-lattice rods long.

The direct beam (000) is not among the reflections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stemkit.data.units import wavelength_angstrom
from stemkit.physics.crystal import Crystal
from stemkit.physics.reflections import ReflectionSet, reflections
from stemkit.physics.rotations import as_rotation_matrices
from stemkit.physics.scattering import relativistic_factor

__all__ = ["KinematicPatterns", "excitation_error", "simulate_kinematic"]

DEFAULT_CHUNK_SIZE = 2048


def excitation_error(g_lab: ArrayLike, beam_energy_kev: float) -> NDArray[np.float64]:
    """Exact excitation error ``s_g`` (1/Å) of lab-frame reciprocal vectors (..., 3).

    Positive inside the Ewald sphere, zero on it; see the module docstring.

    Examples
    --------
    >>> s = excitation_error([0.5, 0.0, 0.0], 300.0)  # at a zone axis: ≈ -λ g² / 2
    >>> round(float(s), 6)
    -0.002461
    """
    g = np.asarray(g_lab, dtype=float)
    if g.shape[-1:] != (3,):
        raise ValueError(f"g_lab must have a last axis of length 3 (gx, gy, gz); got shape {g.shape}.")
    gz = np.array(g[..., 2], ndmin=1)
    g_squared = np.array(np.sum(g**2, axis=-1), ndmin=1)
    s = _excitation_error_from_gz(gz, g_squared, 1.0 / wavelength_angstrom(beam_energy_kev))
    return s.reshape(g.shape[:-1])


def _excitation_error_from_gz(gz: NDArray, g_squared: NDArray, k: float) -> NDArray:
    """Exact ``s_g`` from the beam component ``g_z``, the rotation-invariant ``|g|²`` and ``K = 1/λ``.

    ``g_x² + g_y² = |g|² - g_z²``, so the lateral components are not needed. Works in the
    dtype of ``gz`` with few temporaries.
    """
    q2 = np.square(gz)
    np.subtract(g_squared, q2, out=q2)
    np.maximum(q2, 0, out=q2)
    root = np.subtract(k * k, q2)
    np.sqrt(root, out=root)
    root += k
    q2 /= root
    q2 += gz
    return np.negative(q2, out=q2)


@dataclass(frozen=True)
class KinematicPatterns:
    """A batch of kinematic diffraction patterns as padded arrays of shape (N, P).

    Row ``i`` is pattern ``i``; its ``P`` entries are reflections (sorted by decreasing
    intensity when a selection was made, else in the order of :attr:`reflections`),
    padded at the end where :attr:`valid` is False (all values 0 there).

    Attributes
    ----------
    kx, ky
        Spot positions in 1/Å, lab frame, relative to the direct beam.
    excitation_error
        ``s_g`` in 1/Å (positive inside the Ewald sphere).
    intensity
        ``γ² |F|²`` × shape factor, in Å² (see the module docstring for the absolute scale).
    reflection_index
        Index into :attr:`reflections`, -1 for padding.
    reflections
        The enumerated reflections (hkl, crystal-frame g, structure factors).
    beam_energy_kev, wavelength_angstrom
        The beam.
    thickness_angstrom, excitation_error_width, s_max
        The shape-factor and selection parameters used (None where unused); the first two
        are (N,) arrays where they were given per pattern.
    crystal_name
        :attr:`Crystal.name`.
    beam_fraction_scale
        Factor from :attr:`intensity` to the fraction of the incident beam
        (:meth:`beam_fraction`), (N,) for per-pattern thicknesses; None where undefined
        (a bulk crystal without a thickness).
    """

    kx: NDArray[np.floating]
    ky: NDArray[np.floating]
    excitation_error: NDArray[np.floating]
    intensity: NDArray[np.floating]
    reflection_index: NDArray[np.int32]
    reflections: ReflectionSet
    beam_energy_kev: float
    wavelength_angstrom: float
    thickness_angstrom: float | NDArray[np.floating] | None
    excitation_error_width: float | NDArray[np.floating] | None
    s_max: float | None
    crystal_name: str
    beam_fraction_scale: float | NDArray[np.floating] | None = None

    def beam_fraction(self) -> NDArray[np.floating]:
        """Kinematic fraction of the incident beam in each reflection, (N, P).

        ``intensity × (λ t / V)²`` for a foil of thickness t, ``intensity × (λ / A)²`` for a
        single layer of cell area A (see the module docstring). Valid while << 1.
        """
        if self.beam_fraction_scale is None:
            raise ValueError(
                "the fraction of the beam needs a thickness: simulate with thickness= (Å) instead of "
                "excitation_error_width=, or use a single-layer crystal."
            )
        scale = np.asarray(self.beam_fraction_scale, dtype=self.intensity.dtype)
        return self.intensity * (scale[:, None] if scale.ndim else scale)

    @property
    def valid(self) -> NDArray[np.bool_]:
        """True where an entry is a reflection, False for padding, (N, P)."""
        return self.reflection_index >= 0

    @property
    def hkl(self) -> NDArray[np.int64]:
        """Miller indices (N, P, 3); zeros for padding."""
        index = np.maximum(self.reflection_index, 0)
        return np.where(self.valid[..., None], self.reflections.hkl[index], 0)

    @property
    def n_patterns(self) -> int:
        """N."""
        return self.kx.shape[0]

    @property
    def n_peaks(self) -> int:
        """P, the padded number of reflections per pattern."""
        return self.kx.shape[1]

    def to_dataset(self) -> Any:
        """The patterns as an ``xarray.Dataset`` with dims ``("pattern", "peak")``.

        Variables ``kx``, ``ky`` (1/Å), ``intensity``, ``excitation_error`` (1/Å), ``valid``
        and ``h``, ``k``, ``l``, in the padded peak layout of DESIGN.md.
        """
        import xarray as xr

        dims = ("pattern", "peak")
        hkl = self.hkl
        variables = {
            "kx": (dims, self.kx, {"units": "1/Å"}),
            "ky": (dims, self.ky, {"units": "1/Å"}),
            "intensity": (dims, self.intensity, {"units": "Å²"}),
            "excitation_error": (dims, self.excitation_error, {"units": "1/Å"}),
            "valid": (dims, self.valid),
            "h": (dims, hkl[..., 0]), "k": (dims, hkl[..., 1]), "l": (dims, hkl[..., 2]),
        }
        attrs = {"beam_energy_kev": self.beam_energy_kev, "crystal": self.crystal_name, "k_max": self.reflections.k_max,
                 "method": "kinematic"}
        for name in ("thickness_angstrom", "excitation_error_width", "s_max"):
            value = getattr(self, name)
            if np.ndim(value):
                variables[name] = ("pattern", value)
            elif value is not None:
                attrs[name] = value
        return xr.Dataset(variables, attrs=attrs)


@dataclass(frozen=True)
class _Setup:
    """Everything the per-chunk kernels need, in the working dtype."""

    g_crystal: NDArray  # (3, m) crystal-frame reciprocal vectors
    g_squared: NDArray  # (m,) |g|², invariant under rotation
    intensity: NDArray  # (m,) γ²|F|²
    k: float  # 1/λ
    foil: bool  # shape factor: sinc² of a thickness (True) or a Gaussian of a width (False)
    s_max: float | None
    n_peaks: int | None  # fixed output width, or None for "as many as pass s_max"


def _shape_factor(s: NDArray, parameter: NDArray, setup: _Setup) -> NDArray:
    """The excitation-error shape factor, 1 at s = 0 (a new array).

    ``parameter`` (broadcastable to ``s``) is the thickness in Å for a foil, else σ in 1/Å.
    """
    if setup.foil:
        x = np.multiply(s, np.pi * parameter)
        small = np.abs(x) < 1e-4
        x_small = x[small]
        x[small] = 1.0  # placeholder, replaced by the Taylor series below
        out = np.sin(x)
        out /= x
        out[small] = 1.0 - np.square(x_small) / 6.0
        return np.square(out, out=out)
    out = np.square(s)
    out *= -0.5 / np.square(parameter)
    return np.exp(out, out=out)


def _lateral(rotations: NDArray, rows: NDArray, columns: NDArray, setup: _Setup) -> tuple[NDArray, NDArray]:
    """``(kx, ky)`` of reflections ``columns`` in orientations ``rows`` (1-D index arrays)."""
    g = setup.g_crystal[:, columns].T  # (n_entries, 3)
    lateral = rotations[rows, :2, :]  # (n_entries, 2, 3)
    return np.einsum("eij,ej->ie", lateral, g)


def _kernel_all(rotations: NDArray, parameter: NDArray, setup: _Setup) -> tuple[NDArray, ...]:
    """Every reflection for every orientation, in reflection order."""
    n, m = len(rotations), setup.g_crystal.shape[1]
    g_lab = (rotations.reshape(n * 3, 3) @ setup.g_crystal).reshape(n, 3, m)
    s = _excitation_error_from_gz(g_lab[:, 2], setup.g_squared, setup.k)
    intensity = _shape_factor(s, parameter[:, None], setup)
    intensity *= setup.intensity
    index = np.broadcast_to(np.arange(m, dtype=np.int32), (n, m))
    return np.ascontiguousarray(g_lab[:, 0]), np.ascontiguousarray(g_lab[:, 1]), s, intensity, index


def _kernel_within_s_max(rotations: NDArray, parameter: NDArray, setup: _Setup) -> tuple[NDArray, ...]:
    """Reflections with |s| < s_max, most intense first, padded to the row maximum (or n_peaks)."""
    n = len(rotations)
    s = _excitation_error_from_gz(rotations[:, 2, :] @ setup.g_crystal, setup.g_squared, setup.k)
    rows, columns = np.nonzero(np.abs(s) < setup.s_max)
    s_kept = s[rows, columns]
    intensity = _shape_factor(s_kept, parameter[rows], setup)
    intensity *= setup.intensity[columns]
    order = np.lexsort((-intensity, rows))  # by pattern, then decreasing intensity
    rows, columns, s_kept, intensity = rows[order], columns[order], s_kept[order], intensity[order]
    counts = np.bincount(rows, minlength=n)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    width = setup.n_peaks if setup.n_peaks is not None else int(counts.max(initial=0))
    keep = rank < width
    rows, columns, rank, s_kept, intensity = rows[keep], columns[keep], rank[keep], s_kept[keep], intensity[keep]
    kx_kept, ky_kept = _lateral(rotations, rows, columns, setup)
    return _scatter(n, width, rows, rank, (kx_kept, ky_kept, s_kept, intensity), columns, s.dtype)


def _kernel_top(rotations: NDArray, parameter: NDArray, setup: _Setup) -> tuple[NDArray, ...]:
    """The n_peaks most intense reflections of each orientation, most intense first."""
    n, m = len(rotations), setup.g_crystal.shape[1]
    s = _excitation_error_from_gz(rotations[:, 2, :] @ setup.g_crystal, setup.g_squared, setup.k)
    intensity = _shape_factor(s, parameter[:, None], setup)
    intensity *= setup.intensity
    take = min(setup.n_peaks, m)
    candidates = np.argpartition(-intensity, take - 1, axis=1)[:, :take] if take < m else np.tile(np.arange(m), (n, 1))
    order = np.argsort(-np.take_along_axis(intensity, candidates, axis=1), axis=1, kind="stable")
    columns = np.take_along_axis(candidates, order, axis=1).ravel()
    rows = np.repeat(np.arange(n), take)
    rank = np.tile(np.arange(take), n)
    kx_kept, ky_kept = _lateral(rotations, rows, columns, setup)
    values = (kx_kept, ky_kept, s[rows, columns], intensity[rows, columns])
    return _scatter(n, setup.n_peaks, rows, rank, values, columns, s.dtype)


def _scatter(n: int, width: int, rows: NDArray, rank: NDArray, values: tuple[NDArray, ...], columns: NDArray,
             dtype: np.dtype) -> tuple[NDArray, ...]:
    """Place per-entry values at ``[row, rank]`` of zero-filled (n, width) arrays; index -1 elsewhere."""
    out = []
    for value in values:
        array = np.zeros((n, width), dtype=dtype)
        array[rows, rank] = value
        out.append(array)
    index = np.full((n, width), -1, dtype=np.int32)
    index[rows, rank] = columns
    return (*out, index)


def _kernel(rotations: NDArray, parameter: NDArray, setup: _Setup) -> tuple[NDArray, ...]:
    """kx, ky, s, intensity, reflection_index for a chunk of orientations (n, 3, 3).

    ``parameter`` (n,) is each orientation's thickness (Å) or Gaussian width (1/Å).
    """
    if setup.s_max is not None:
        return _kernel_within_s_max(rotations, parameter, setup)
    if setup.n_peaks is not None:
        return _kernel_top(rotations, parameter, setup)
    return _kernel_all(rotations, parameter, setup)


def _validate(thickness: ArrayLike | None, width: ArrayLike | None, s_max: float | None,
              max_reflections: int | None) -> None:
    if (thickness is None) == (width is None):
        raise ValueError(
            "give exactly one shape factor: thickness (Å, sinc² of a foil) or excitation_error_width "
            f"(1/Å, Gaussian); got thickness={thickness!r}, excitation_error_width={width!r}."
        )
    for name, value in (("thickness", thickness), ("excitation_error_width", width), ("s_max", s_max)):
        if value is not None and not np.all(np.asarray(value, dtype=float) > 0):
            raise ValueError(f"{name} must be positive; got {value!r}.")
    if s_max is not None and np.ndim(s_max):
        raise ValueError(f"s_max must be a single number (1/Å); got an array of shape {np.shape(s_max)}.")
    if max_reflections is not None and not int(max_reflections) >= 1:
        raise ValueError(f"max_reflections must be a positive integer; got {max_reflections!r}.")


def _per_pattern(value: ArrayLike, n: int, name: str, dtype: np.dtype) -> NDArray:
    """A scalar or (N,) shape-factor parameter as an (N,) array."""
    array = np.asarray(value, dtype=dtype)
    if array.ndim and array.shape != (n,):
        raise ValueError(f"{name} must be a number or one value per orientation, shape ({n},); "
                         f"got shape {array.shape}.")
    return np.broadcast_to(array, (n,))


def simulate_kinematic(
    crystal: Crystal,
    orientations: ArrayLike,
    *,
    beam_energy_kev: float,
    k_max: float,
    thickness: ArrayLike | None = None,
    excitation_error_width: ArrayLike | None = None,
    s_max: float | None = None,
    max_reflections: int | None = None,
    min_relative_intensity: float = 1e-6,
    dtype: type[np.floating] | str = np.float32,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> KinematicPatterns:
    """Kinematic diffraction spots of ``crystal`` for a batch of orientations at once.

    Parameters
    ----------
    crystal
        The crystal; its reflections are enumerated once and cached (per ``k_max``).
    orientations
        Rotation matrices (N, 3, 3) or scalar-first quaternions (N, 4), crystal → lab
        (``g_lab = R @ g_crystal``); a single one is a batch of one.
    beam_energy_kev
        Beam energy in keV (e.g. 200 or 300), for λ and γ.
    k_max
        Largest ``|g|`` in 1/Å.
    thickness
        Foil thickness in Å, one number or one per orientation (N,): sinc² shape factor.
        Exactly one of ``thickness`` and ``excitation_error_width`` is required.
    excitation_error_width
        σ in 1/Å of a Gaussian shape factor ``exp(-s²/(2σ²))``, one number or (N,).
    s_max
        Keep only reflections with ``|s_g| < s_max`` (1/Å).
    max_reflections
        Output exactly this many entries per pattern: the most intense (after ``s_max``),
        padded with invalid entries if fewer. Without it and without ``s_max``, every
        reflection is returned for every pattern, in :attr:`KinematicPatterns.reflections`
        order; with ``s_max`` only, the width is the largest number that pass.
    min_relative_intensity
        Drop reflections with ``|F|²`` below this fraction of the strongest (absences).
    dtype
        Floating type of the outputs and the arithmetic (float32 is fast; float64 exact).
    chunk_size
        Orientations processed per vectorised step (bounds memory: ~16 bytes × chunk × n_reflections).

    Returns
    -------
    KinematicPatterns
        Padded (N, P) arrays and the metadata.

    Examples
    --------
    >>> import numpy as np
    >>> from stemkit.physics import crystal
    >>> patterns = simulate_kinematic(crystal("Cu"), np.eye(3), beam_energy_kev=300, k_max=1.0,
    ...                               excitation_error_width=0.01, s_max=0.05)
    >>> sorted(patterns.hkl[0][patterns.valid[0]].tolist())[:3]
    [[-2, -2, 0], [-2, 0, 0], [-2, 2, 0]]
    """
    _validate(thickness, excitation_error_width, s_max, max_reflections)
    dtype = np.dtype(dtype)
    rotations = as_rotation_matrices(orientations).astype(dtype)
    n = len(rotations)
    foil = thickness is not None
    parameter = _per_pattern(thickness if foil else excitation_error_width, n,
                             "thickness" if foil else "excitation_error_width", dtype)
    reflection_set = reflections(crystal, k_max, min_relative_intensity=min_relative_intensity)
    wavelength = wavelength_angstrom(beam_energy_kev)
    setup = _Setup(
        g_crystal=np.ascontiguousarray(reflection_set.g.T, dtype=dtype),
        g_squared=np.sum(reflection_set.g**2, axis=1).astype(dtype),
        intensity=(reflection_set.intensity * relativistic_factor(beam_energy_kev) ** 2).astype(dtype),
        k=1.0 / wavelength,
        foil=foil,
        s_max=None if s_max is None else float(s_max),
        n_peaks=None if max_reflections is None else int(max_reflections),
    )
    chunk_size = max(1, int(chunk_size))
    chunks = [_kernel(rotations[start:start + chunk_size], parameter[start:start + chunk_size], setup)
              for start in range(0, n, chunk_size)]
    kx, ky, s, intensity, index = _concatenate_padded(chunks, setup.n_peaks, dtype)
    thickness_used = _as_recorded(thickness)
    return KinematicPatterns(
        kx=kx, ky=ky, excitation_error=s, intensity=intensity, reflection_index=index,
        reflections=reflection_set, beam_energy_kev=float(beam_energy_kev), wavelength_angstrom=wavelength,
        thickness_angstrom=thickness_used, excitation_error_width=_as_recorded(excitation_error_width),
        s_max=setup.s_max, crystal_name=crystal.name,
        beam_fraction_scale=_beam_fraction_scale(crystal, wavelength, thickness_used),
    )


def _as_recorded(value: ArrayLike | None) -> float | NDArray[np.float64] | None:
    """A shape-factor parameter as stored on the result: None, a float or an (N,) array."""
    if value is None:
        return None
    array = np.asarray(value, dtype=float)
    return float(array) if array.ndim == 0 else array.copy()


def _beam_fraction_scale(
    crystal: Crystal, wavelength: float, thickness: float | NDArray[np.float64] | None
) -> float | NDArray[np.float64] | None:
    """``(λ t / V)²`` for a foil, ``(λ c / V)² = (λ / A)²`` for a single layer, else None."""
    if crystal.is_layer:
        return (wavelength * crystal.lattice_parameters[2] / crystal.volume) ** 2
    if thickness is None:
        return None
    return (wavelength * thickness / crystal.volume) ** 2


def _concatenate_padded(chunks: list[tuple[NDArray, ...]], width: int | None, dtype: np.dtype) -> tuple[NDArray, ...]:
    """Stack per-chunk (n_i, P_i) arrays into (N, max P_i), padding with 0 / -1."""
    if not chunks:
        empty = np.zeros((0, width or 0), dtype=dtype)
        return empty, empty, empty, empty, np.zeros((0, width or 0), dtype=np.int32)
    width = max(chunk[0].shape[1] for chunk in chunks) if width is None else width
    stacked = []
    for column in range(5):
        fill = -1 if column == 4 else 0
        parts = [np.pad(chunk[column], ((0, 0), (0, width - chunk[column].shape[1])), constant_values=fill)
                 for chunk in chunks]
        stacked.append(np.ascontiguousarray(np.concatenate(parts)))
    return tuple(stacked)
