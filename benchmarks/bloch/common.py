"""Shared helpers of the Bloch-wave vs abTEM benchmark (stemkit's environment only).

- ``static_crystal``: the same crystal with every Debye–Waller factor set to 0, to compare with
  a static (no frozen phonon) multislice.
- ``zincblende``: a non-centrosymmetric crystal (ZnS, sphalerite) that is not a stemkit preset;
  an extra case in which the sign convention of the structure factor (``F`` versus ``F*``) changes
  the dynamical intensities (Friedel's law breaks), so a conjugation error cannot hide.
- ``tilt_rotation``: the small lab rotation that brings a beam direction given in the specimen
  (zone-axis) frame onto +z.
"""

from __future__ import annotations

import numpy as np

from stemkit.physics import Atom, Crystal, crystal

#: Sphalerite (zincblende) ZnS, F-43m, a = 5.4093 Å: Zn at 4a (0,0,0), S at 4c (1/4,1/4,1/4);
#: room-temperature B (Å²) of the order of the literature values (Zn ~0.6-0.7, S ~0.5-0.6).
ZNS_A = 5.4093
ZNS_B = {"Zn": 0.65, "S": 0.55}


def zincblende() -> Crystal:
    a = ZNS_A
    fcc = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    atoms = [Atom("Zn", p, 1.0, ZNS_B["Zn"]) for p in fcc] + \
        [Atom("S", tuple(np.add(p, 0.25) % 1.0), 1.0, ZNS_B["S"]) for p in fcc]
    return Crystal(a, a, a, 90, 90, 90, atoms, name="ZnS", space_group="F-43m")


def build_crystal(name: str) -> Crystal:
    """A crystal by name: a stemkit preset, or ``"ZnS"`` (built here)."""
    return zincblende() if name == "ZnS" else crystal(name)


def static_crystal(source: Crystal) -> Crystal:
    """``source`` with every ``b_iso = 0`` (no Debye–Waller damping), same atoms, lattice and symmetry."""
    atoms = [Atom(atom.element, atom.position, atom.occupancy, 0.0) for atom in source.atoms]
    return Crystal(*source.lattice_parameters, atoms, name=source.name, space_group=source.space_group)


def tilt_rotation(beam_direction: np.ndarray) -> np.ndarray:
    """The rotation T (3×3) with ``T @ b = +z`` for a unit beam direction ``b``, about the axis ``b × z``."""
    b = np.asarray(beam_direction, dtype=float)
    b = b / np.linalg.norm(b)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(b, z)
    sine = np.linalg.norm(axis)
    if sine < 1e-15:
        return np.eye(3)
    axis /= sine
    cosine = float(b @ z)
    angle = np.arctan2(sine, cosine)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    assert np.allclose(rotation @ b, z, atol=1e-12)
    return rotation
