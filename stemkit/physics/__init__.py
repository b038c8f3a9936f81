"""Crystals, electron scattering and batched kinematic diffraction.

Public names
------------
Crystals (:mod:`stemkit.physics.crystal`, :mod:`stemkit.physics.presets`)
    ``Crystal`` (lattice, atoms, ``point_group``, ``direct_basis``, ``reciprocal_basis``,
    ``d_spacing``, ``g_vectors``, ``structure_factor``; ``Crystal.preset``,
    ``Crystal.from_cif``, ``Crystal.from_asymmetric_unit``), ``Atom``,
    ``crystal(name)`` and ``preset_names()`` for the built-in crystals.
Symmetry (:mod:`stemkit.physics.symmetry`)
    ``PointGroup`` (proper rotations of a Laue class in the crystal's Cartesian frame;
    ``from_name``, ``from_space_group``, ``to_orix``), ``laue_class``.
Scattering (:mod:`stemkit.physics.scattering`)
    ``scattering_factor(element, g)`` (Lobato & Van Dyck 2014, Å, g = 1/d in 1/Å),
    ``relativistic_factor``, ``interaction_constant``, ``element_symbol``, ``atomic_number``;
    ``wavelength_angstrom`` is re-exported from :mod:`stemkit.data.units`.
Reflections and kinematic diffraction (:mod:`stemkit.physics.reflections`, :mod:`stemkit.physics.kinematic`)
    ``reflections(crystal, k_max)`` → ``ReflectionSet``;
    ``simulate_kinematic(crystal, orientations, beam_energy_kev=, k_max=, thickness= | excitation_error_width=,
    s_max=, max_reflections=)`` → ``KinematicPatterns`` (padded (N, P) arrays ``kx``, ``ky``,
    ``excitation_error``, ``intensity``, ``reflection_index``, ``valid``, ``hkl``; ``beam_fraction()``,
    ``to_dataset()``);
    ``excitation_error(g_lab, beam_energy_kev)``.
Dynamical diffraction (:mod:`stemkit.physics.bloch`)
    ``simulate_bloch(crystal, orientations, beam_energy_kev=, thickness=[...], k_max=, n_beams=, s_max=,
    absorption=)`` → ``BlochPatterns`` (Bloch waves: (N, P) positions and hkl, (N, T, P) intensities as
    fractions of the incident beam at every thickness, ``direct_beam``, ``at_thickness``, ``to_dataset()``).
Rotations (:mod:`stemkit.physics.rotations`)
    ``quaternion_to_matrix``, ``matrix_to_quaternion``, ``as_rotation_matrices``, ``axis_angle_to_matrix``,
    ``quaternion_multiply``, ``quaternion_conjugate``, ``rotation_angle``, ``random_quaternions``,
    ``reduce_to_fundamental_zone``, ``random_fundamental_zone``, ``misorientation_angle``,
    ``to_orix``, ``from_orix``.

Conventions (DESIGN.md): ``g_lab = R @ g_crystal``, a reflection at ``(kx, ky) = g_lab[:2]``,
beam along +z, quaternions ``(w, x, y, z)``, crystal symmetry ``R ~ R @ S``; reciprocal
lengths in 1/Å without 2π; excitation error positive inside the Ewald sphere.
"""

from stemkit.data.units import wavelength_angstrom
from stemkit.physics.bloch import BlochPatterns, simulate_bloch
from stemkit.physics.crystal import Atom, Crystal
from stemkit.physics.kinematic import KinematicPatterns, excitation_error, simulate_kinematic
from stemkit.physics.presets import crystal, preset_names
from stemkit.physics.reflections import ReflectionSet, reflections
from stemkit.physics.rotations import (
    as_rotation_matrices,
    axis_angle_to_matrix,
    from_orix,
    matrix_to_quaternion,
    misorientation_angle,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    random_fundamental_zone,
    random_quaternions,
    reduce_to_fundamental_zone,
    rotation_angle,
    to_orix,
)
from stemkit.physics.scattering import (
    atomic_number,
    element_symbol,
    interaction_constant,
    relativistic_factor,
    scattering_factor,
)
from stemkit.physics.symmetry import PointGroup, laue_class

__all__ = [
    "Atom",
    "BlochPatterns",
    "Crystal",
    "KinematicPatterns",
    "PointGroup",
    "ReflectionSet",
    "as_rotation_matrices",
    "atomic_number",
    "axis_angle_to_matrix",
    "crystal",
    "element_symbol",
    "excitation_error",
    "from_orix",
    "interaction_constant",
    "laue_class",
    "matrix_to_quaternion",
    "misorientation_angle",
    "preset_names",
    "quaternion_conjugate",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "random_fundamental_zone",
    "random_quaternions",
    "reduce_to_fundamental_zone",
    "reflections",
    "relativistic_factor",
    "rotation_angle",
    "scattering_factor",
    "simulate_bloch",
    "simulate_kinematic",
    "to_orix",
    "wavelength_angstrom",
]
