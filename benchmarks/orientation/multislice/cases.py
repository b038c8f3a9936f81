"""Write the cases of the multislice orientation test set (issue 11), in stemkit's environment.

Each case is one thick Cu or Cu2O specimen in a random orientation, to be simulated by abTEM's
multislice (``abtem_side.py``, its own venv, which imports nothing from stemkit) and then read by
the orientation model (``score.py``):

- orientations uniform over SO(3) (:func:`stemkit.physics.rotations.random_quaternions`, seeded),
  as rotation matrices crystal → lab (DESIGN.md: ``g_lab = R @ g_crystal``, beam along lab +z);
- phases: exactly half Cu and half Cu2O, in a seeded random order;
- thickness uniform in 15-40 nm; 300 keV.

Two extra cases, ``check-zone-axis`` (Cu [011] exactly on axis) and ``check-off-axis`` (Cu2O, a random
orientation of its own), check the orientation convention end to end; they are not scored.

For the abTEM side every case carries the crystal as stemkit has it: the direct basis (columns a, b, c,
Å, crystal Cartesian frame), the reciprocal basis (columns, 1/Å, no 2π), every atom of the unit cell
(element, fractional position) and each element's Debye-Waller B (Å²).

Usage: .venv/bin/python benchmarks/orientation/multislice/cases.py [--n N] [--seed S] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stemkit.physics import crystal as preset_crystal
from stemkit.physics.rotations import matrix_to_quaternion, quaternion_to_matrix, random_quaternions
from stemkit.physics.specimens import zone_axis_rotation

PHASES = ("Cu", "Cu2O")
THICKNESS_NM = (15.0, 40.0)
BEAM_ENERGY_KEV = 300.0
DEFAULT_N = 120
DEFAULT_SEED = 2026


def crystal_record(name: str) -> dict:
    """What the abTEM side needs to build the crystal, in stemkit's own crystal frame."""
    crystal = preset_crystal(name)
    return {
        "name": crystal.name,
        "direct_basis": crystal.direct_basis.tolist(),
        "reciprocal_basis": crystal.reciprocal_basis.tolist(),
        "elements": [atom.element for atom in crystal.atoms],
        "fractional_positions": [list(atom.position) for atom in crystal.atoms],
        "occupancy": [atom.occupancy for atom in crystal.atoms],
        "b_iso_by_element": {atom.element: atom.b_iso for atom in crystal.atoms},
    }


def make_cases(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    quaternions = random_quaternions(n, seed=rng)
    phases = np.array([PHASES[i % 2] for i in range(n)])
    phases = phases[rng.permutation(n)]
    thickness = rng.uniform(*THICKNESS_NM, size=n)
    cases = []
    for index in range(n):
        rotation = quaternion_to_matrix(quaternions[index])
        cases.append({"name": f"case-{index:04d}", "index": index, "scored": True, "phase": str(phases[index]),
                      "quaternion": quaternions[index].tolist(), "rotation": rotation.tolist(),
                      "thickness_nm": float(thickness[index]), "beam_energy_kev": BEAM_ENERGY_KEV})
    # the convention checks: a zone axis and an off-axis orientation (not scored)
    zone = zone_axis_rotation(preset_crystal("Cu"), (0, 1, 1))
    off = quaternion_to_matrix(random_quaternions(1, seed=seed + 1)[0])
    for name, phase, rotation, thickness_nm in (("check-zone-axis", "Cu", zone, 20.0),
                                                ("check-off-axis", "Cu2O", off, 25.0)):
        cases.append({"name": name, "index": len(cases), "scored": False, "phase": phase,
                      "quaternion": matrix_to_quaternion(rotation).tolist(), "rotation": rotation.tolist(),
                      "thickness_nm": thickness_nm, "beam_energy_kev": BEAM_ENERGY_KEV})
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="scored cases (even: half Cu, half Cu2O)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    args = parser.parse_args()
    if args.n % 2:
        parser.error("--n must be even (half Cu, half Cu2O)")
    args.out.mkdir(parents=True, exist_ok=True)
    cases = make_cases(args.n, args.seed)
    record = {"seed": args.seed, "n_scored": args.n, "thickness_nm": THICKNESS_NM,
              "beam_energy_kev": BEAM_ENERGY_KEV, "crystals": {name: crystal_record(name) for name in PHASES},
              "cases": cases}
    path = args.out / "cases.json"
    text = json.dumps(record, indent=1)
    if path.is_file() and path.read_text() != text:
        raise SystemExit(f"{path} exists with other cases; move it (and spots/) away to start a new set")
    path.write_text(text)
    scored = [c for c in cases if c["scored"]]
    counts = {p: sum(c["phase"] == p for c in scored) for p in PHASES}
    t = np.array([c["thickness_nm"] for c in scored])
    print(f"wrote {len(scored)} scored cases ({counts}), thickness {t.min():.1f}-{t.max():.1f} nm, "
          f"+ {len(cases) - len(scored)} check cases, to {path}")


if __name__ == "__main__":
    main()
