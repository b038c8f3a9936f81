"""Write the cases of the Bloch-wave vs abTEM benchmark (issue 11), in stemkit's environment.

For every case (crystal, zone axis, tilt, beam energy) this writes everything the abTEM side
needs, so that it imports nothing from stemkit:

- the orthogonal zone-axis supercell built from stemkit's crystal: the lab frame of
  ``zone_axis_rotation`` (zone axis along +z), cell lengths Lx, Ly, Lz (Å), elements and
  Cartesian positions (Å) of every atom;
- the beam direction ``b`` in that specimen frame and abTEM's plane-wave tilt
  ``(atan(b_x/b_z), atan(b_y/b_z))`` in mrad (abTEM's propagator uses tan(tilt));
- the rotation stemkit uses, ``R = T @ R_za`` (crystal → lab), with ``T`` the small rotation
  that takes ``b`` onto +z: stemkit's beam is +z, abTEM's crystal stays put and its beam tilts;
- thicknesses: whole numbers of the supercell's period Lz near 20, 50, 100, 200, 400 Å (the
  exact values go to both sides);
- the reflections to compare: every hkl with |g| <= K_LIST and |s_g| <= S_LIST, their specimen-frame g and the
  pixel (g_x Lx, g_y Ly) they fall on in a multislice of that cell (integers).

Usage: .venv/bin/python benchmarks/bloch/cases.py [OUT_DIR]   (default benchmarks/bloch/data)
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_crystal, static_crystal, tilt_rotation  # noqa: E402

from stemkit.physics import interaction_constant, wavelength_angstrom  # noqa: E402
from stemkit.physics.specimens import zone_axis_rotation  # noqa: E402

TARGET_THICKNESSES = (20.0, 50.0, 100.0, 200.0, 400.0)  # Å
K_LIST = 2.0  # 1/Å: reflections listed for the comparison ...
S_LIST = 0.25  # 1/Å: ... with |s_g| up to this
TILT_MRAD = 15.0
TILT_AZIMUTH_DEG = 25.0  # in the specimen frame, off every mirror line of these zones

CASES = [
    # (crystal, zone axis, tilt mrad, keV[, special])
    *[(name, axis, tilt, 200.0) for name in ("Cu", "Cu2O") for axis in ((0, 0, 1), (0, 1, 1), (1, 1, 1))
      for tilt in (0.0, TILT_MRAD)],
    ("Cu", (0, 1, 1), TILT_MRAD, 300.0),
    # Extra: a non-centrosymmetric crystal (not a preset), where F vs F* matters dynamically.
    ("ZnS", (0, 1, 1), 0.0, 200.0),
    ("ZnS", (0, 1, 1), TILT_MRAD, 200.0),
    # Pendellösung: Cu 200 at its Bragg angle (s_200 = 0), 50 mrad off [001] along y so that the
    # other reflections of the zone are far from theirs: a systematic row, close to two beams;
    # an exit plane after every period (3.6 Å) up to 400 Å.
    ("Cu", (0, 0, 1), None, 200.0, "pendellosung"),
]
PENDELLOSUNG_HKL = (2, 0, 0)
PENDELLOSUNG_OFFSET_MRAD = 50.0


def _integer_direction(vector: np.ndarray, max_denominator: int = 24) -> np.ndarray:
    """The shortest integer vector parallel (not anti-parallel) to ``vector``."""
    scale = np.max(np.abs(vector))
    fractions = [Fraction(float(v / scale)).limit_denominator(max_denominator) for v in vector]
    lcm = np.lcm.reduce([f.denominator for f in fractions])
    integers = np.array([int(f * lcm) for f in fractions])
    integers //= np.gcd.reduce(integers)
    cosine = integers @ vector / np.linalg.norm(integers) / np.linalg.norm(vector)
    if not cosine > 1 - 1e-9:
        raise ValueError(f"no small integer lattice direction along {vector}")
    return integers


def zone_axis_supercell(crystal, zone_axis):
    """Orthogonal supercell with lab x, y, z (zone axis) along its edges.

    Returns the rotation R_za, the integer lattice vectors (rows, in the crystal's fractional
    basis) along x, y, z, the lengths (Lx, Ly, Lz) and the elements and Cartesian lab-frame
    positions (Å) of all atoms in the cell.
    """
    rotation = zone_axis_rotation(crystal, zone_axis)
    inverse_direct = np.linalg.inv(crystal.direct_basis)
    vectors = np.array([_integer_direction(inverse_direct @ rotation[i]) for i in range(3)])  # rows
    lab = (rotation @ crystal.direct_basis @ vectors.T).T  # each row along lab x, y, z
    lengths = np.linalg.norm(lab, axis=1)
    assert np.allclose(lab, np.diag(lengths), atol=1e-9), lab
    n_cells = int(round(abs(np.linalg.det(vectors))))
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ vectors
    low, high = corners.min(axis=0), corners.max(axis=0)
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(low, high)], indexing="ij"), -1).reshape(-1, 3)
    to_super = np.linalg.inv(vectors.T)
    elements, positions = [], []
    for atom in crystal.atoms:
        fractional = (np.asarray(atom.position) + grid) @ to_super.T
        fractional = np.round(fractional, 10)
        inside = np.all((fractional >= 0) & (fractional < 1 - 1e-9), axis=1)
        for f in fractional[inside]:
            elements.append(atom.element)
            positions.append(f * lengths)
    assert len(elements) == n_cells * len(crystal.atoms), (len(elements), n_cells, len(crystal.atoms))
    return rotation, vectors, lengths, elements, np.array(positions)


def _excitation_error(g_lab: np.ndarray, k: float) -> np.ndarray:
    """stemkit's s_g (1/Å, positive inside the Ewald sphere) for a beam along +z."""
    return np.sqrt(k**2 - g_lab[..., 0] ** 2 - g_lab[..., 1] ** 2) - k - g_lab[..., 2]


def _bragg_beam(crystal, rotation_za: np.ndarray, hkl, offset_y: float, k: float) -> np.ndarray:
    """Beam direction (specimen frame) with b_y = offset_y that puts ``hkl`` at s = 0 (bisection on b_x)."""
    g = rotation_za @ crystal.g_vectors(hkl)

    def s_of(bx: float) -> float:
        beam = np.array([bx, offset_y, 0.0])
        beam[2] = np.sqrt(1 - bx**2 - offset_y**2)
        return float(_excitation_error(tilt_rotation(beam) @ g, k))

    low, high = -0.05, 0.05
    assert s_of(low) * s_of(high) < 0
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if s_of(low) * s_of(middle) > 0 else (low, middle)
    bx = 0.5 * (low + high)
    return np.array([bx, offset_y, np.sqrt(1 - bx**2 - offset_y**2)])


def make_case(name: str, zone_axis, tilt_mrad, energy_kev: float, special: str | None = None) -> dict:
    preset = build_crystal(name)
    static = static_crystal(preset)
    rotation_za, vectors, lengths, elements, positions = zone_axis_supercell(static, zone_axis)
    k = 1.0 / wavelength_angstrom(energy_kev)
    if special == "pendellosung":
        beam = _bragg_beam(static, rotation_za, PENDELLOSUNG_HKL, PENDELLOSUNG_OFFSET_MRAD * 1e-3, k)
        tilt_mrad = float(1e3 * np.arccos(beam[2]))
        repeats = list(range(1, int(round(TARGET_THICKNESSES[-1] / lengths[2])) + 1))
    else:
        azimuth = np.deg2rad(TILT_AZIMUTH_DEG)
        theta = tilt_mrad * 1e-3
        beam = np.array([np.sin(theta) * np.cos(azimuth), np.sin(theta) * np.sin(azimuth), np.cos(theta)])
        repeats = [max(1, int(round(t / lengths[2]))) for t in TARGET_THICKNESSES]
    tilt = tilt_rotation(beam)
    rotation = tilt @ rotation_za
    abtem_tilt = 1e3 * np.arctan2(beam[:2], beam[2])

    # Reflections: every hkl with 0 < |g| <= K_LIST that is not a lattice-centring absence.
    bounds = np.floor(K_LIST * np.linalg.norm(static.direct_basis, axis=0)).astype(int)
    hkl = np.stack(np.meshgrid(*[np.arange(-b, b + 1) for b in bounds], indexing="ij"), -1).reshape(-1, 3)
    g_crystal = static.g_vectors(hkl)
    norm = np.linalg.norm(g_crystal, axis=1)
    keep = (norm > 0) & (norm <= K_LIST)
    hkl, g_crystal = hkl[keep], g_crystal[keep]
    # ... and near enough to the Ewald sphere to matter: |s_g| <= S_LIST at this orientation.
    s = _excitation_error(g_crystal @ rotation.T, k)
    keep = np.abs(s) <= S_LIST
    hkl, g_crystal = hkl[keep], g_crystal[keep]
    g_spec = g_crystal @ rotation_za.T
    pixel = g_spec[:, :2] * lengths[:2]
    assert np.allclose(pixel, np.round(pixel), atol=1e-6), "a reflection off the supercell's reciprocal grid"
    zone = np.asarray(zone_axis)
    label = f"{name} [{''.join(map(str, zone_axis))}] {'on axis' if tilt_mrad == 0 else f'{tilt_mrad:g} mrad'} " \
            f"{energy_kev:g} keV"
    if special == "pendellosung":
        label = f"{name} {''.join(map(str, PENDELLOSUNG_HKL))} Bragg, {tilt_mrad:.1f} mrad off [{''.join(map(str, zone_axis))}] " \
                f"{energy_kev:g} keV"
    return {
        "name": label,
        "special": special,
        "crystal": name,
        "b_iso_by_element": {atom.element: atom.b_iso for atom in preset.atoms},
        "zone_axis": list(zone_axis),
        "beam_energy_kev": energy_kev,
        "tilt_mrad": tilt_mrad,
        "tilt_azimuth_deg": TILT_AZIMUTH_DEG if tilt_mrad else 0.0,
        "beam_direction_specimen": beam.tolist(),
        "abtem_tilt_mrad": abtem_tilt.tolist(),
        "rotation_zone_axis": rotation_za.tolist(),
        "rotation": rotation.tolist(),
        "supercell_vectors_fractional": vectors.tolist(),
        "cell_angstrom": lengths.tolist(),
        "symbols": elements,
        "positions_angstrom": positions.tolist(),
        "repeats": repeats,
        "thickness_angstrom": [r * lengths[2] for r in repeats],
        "hkl": hkl.tolist(),
        "g_specimen": g_spec.tolist(),
        "pixel": np.round(pixel).astype(int).tolist(),
        "zolz": (hkl @ zone == 0).tolist(),
        "structure_factor_abs": np.abs(static.structure_factor(hkl)).tolist(),
        "stemkit_wavelength_angstrom": wavelength_angstrom(energy_kev),
        "stemkit_sigma_rad_per_volt_angstrom": interaction_constant(energy_kev),
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "data"
    out.mkdir(parents=True, exist_ok=True)
    cases = [make_case(*case) for case in CASES]
    (out / "cases.json").write_text(json.dumps({"cases": cases}))
    for case in cases:
        print(f"{case['name']:44s} cell {' x '.join(f'{v:.3f}' for v in case['cell_angstrom'])} Å, "
              f"{len(case['symbols'])} atoms, t = {', '.join(f'{t:.1f}' for t in case['thickness_angstrom'][:5])}"
              f"{' ...' if len(case['repeats']) > 5 else ''} Å, "
              f"{len(case['hkl'])} hkl, abTEM tilt ({case['abtem_tilt_mrad'][0]:.3f}, {case['abtem_tilt_mrad'][1]:.3f}) mrad")
    print(f"wrote {len(cases)} cases to {out / 'cases.json'}")


if __name__ == "__main__":
    main()
