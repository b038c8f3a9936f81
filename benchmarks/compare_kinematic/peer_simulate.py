"""Kinematic spots from diffsims, the independent simulator, driven by a JSON request.

Runs with the peer's interpreter only (``.peers/diffsims/bin/python``; diffsims and orix
are GPL-3 and live in their own environment). It imports nothing from stemkit and does no
convention conversion: orientations arrive as orix rotation matrices ``O`` and spots leave
in diffsims' own lab frame, so that every conversion lives in ``compare.py`` and a wrong one
shows up there as a failed comparison.

Usage::

    .peers/diffsims/bin/python peer_simulate.py request.json result.npz

Request (JSON)
--------------
``crystals``
    name -> ``{"lattice": [a, b, c, alpha, beta, gamma], "space_group": int,
    "atoms": [{"element", "position" (fractional), "occupancy", "b_iso" (Å²)}, ...]}``,
    the full unit cell (no symmetry expansion is done here).
``jobs``
    A list of ``{"id", "crystal", "beam_energy_kev", "k_max" (1/Å), "max_excitation_error"
    (1/Å, selection |s| < it), "shape_factor": {"model", "width", "minima_number"},
    "scattering_params" ("lobato" or "xtables"), "debye_waller" (bool),
    "orientations": [O (3x3), ...]}``.

Result (npz)
------------
One row per spot of every job and orientation: ``job``, ``pattern`` (indices), ``hkl``
(n, 3) int, ``xyz`` (n, 3) the rotated reciprocal vector in diffsims' lab frame (1/Å),
``intensity`` (diffsims' units); plus ``job_id``, ``wavelength`` (Å) per job and the
versions of diffsims and orix.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

HKL_TOLERANCE = 1e-6


def build_phase(name: str, spec: dict[str, Any]) -> Any:
    """An orix ``Phase`` holding a diffpy ``Structure`` of the full unit cell.

    Parameters
    ----------
    name
        Phase name.
    spec
        ``{"lattice", "space_group", "atoms"}`` from the request.

    Returns
    -------
    orix.crystal_map.Phase
        The phase; B factors are not stored on it (diffsims takes them per element).
    """
    from diffpy.structure import Atom, Lattice, Structure
    from orix.crystal_map import Phase

    atoms = [Atom(atom["element"], atom["position"], occupancy=atom["occupancy"]) for atom in spec["atoms"]]
    structure = Structure(atoms=atoms, lattice=Lattice(*spec["lattice"]))
    return Phase(name, space_group=int(spec["space_group"]), structure=structure)


def debye_waller_by_element(atoms: list[dict[str, Any]]) -> dict[str, float]:
    """diffsims' ``debye_waller_factors``: one B (Å²) per element.

    Raises
    ------
    ValueError
        If two atoms of one element carry different B (diffsims cannot express that).
    """
    factors: dict[str, float] = {}
    for atom in atoms:
        previous = factors.setdefault(atom["element"], float(atom["b_iso"]))
        if previous != float(atom["b_iso"]):
            raise ValueError(f"diffsims takes one B per element; {atom['element']} has {previous} and "
                             f"{atom['b_iso']} Å².")
    return factors


def make_generator(job: dict[str, Any]) -> Any:
    """A diffsims ``SimulationGenerator`` for the job's beam, shape factor and scattering factors."""
    from diffsims.generators.simulation_generator import SimulationGenerator

    shape = job["shape_factor"]
    kwargs = {"minima_number": shape["minima_number"]} if "minima_number" in shape else {}
    return SimulationGenerator(accelerating_voltage=float(job["beam_energy_kev"]),
                               scattering_params=job["scattering_params"],
                               shape_factor_model=shape["model"], **kwargs)


def integer_hkl(hkl: np.ndarray) -> np.ndarray:
    """Miller indices as ints, refusing values that are not integers to ``HKL_TOLERANCE``."""
    rounded = np.rint(hkl)
    if hkl.size and np.abs(hkl - rounded).max() > HKL_TOLERANCE:
        raise ValueError(f"diffsims returned non-integer hkl (max deviation {np.abs(hkl - rounded).max():.2e}).")
    return rounded.astype(np.int64)


def simulate_job(job: dict[str, Any], phase: Any, crystal: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """Spots of every orientation of one job, one dict of arrays per orientation."""
    from orix.quaternion import Rotation

    generator = make_generator(job)
    dw = debye_waller_by_element(crystal["atoms"]) if job["debye_waller"] else {}
    out = []
    for matrix in job["orientations"]:
        simulation = generator.calculate_diffraction2d(
            phase, Rotation.from_matrix(np.asarray(matrix, dtype=float)),
            reciprocal_radius=float(job["k_max"]), with_direct_beam=False,
            max_excitation_error=float(job["max_excitation_error"]),
            shape_factor_width=float(job["shape_factor"]["width"]), debye_waller_factors=dw)
        spots = simulation.coordinates
        out.append({"hkl": integer_hkl(np.asarray(spots.hkl, dtype=float).reshape(-1, 3)),
                    "xyz": np.asarray(spots.data, dtype=float).reshape(-1, 3),
                    "intensity": np.asarray(spots.intensity, dtype=float).ravel()})
    return out


def run(request: dict[str, Any]) -> dict[str, np.ndarray]:
    """Simulate every job of ``request``; return the flat arrays written to the npz."""
    from diffsims.utils.sim_utils import get_electron_wavelength

    phases = {name: build_phase(name, spec) for name, spec in request["crystals"].items()}
    rows: dict[str, list[np.ndarray]] = {"job": [], "pattern": [], "hkl": [], "xyz": [], "intensity": []}
    for j, job in enumerate(request["jobs"]):
        for p, spots in enumerate(simulate_job(job, phases[job["crystal"]], request["crystals"][job["crystal"]])):
            n = len(spots["intensity"])
            rows["job"].append(np.full(n, j))
            rows["pattern"].append(np.full(n, p))
            for key in ("hkl", "xyz", "intensity"):
                rows[key].append(spots[key])
    result = {key: np.concatenate(value) for key, value in rows.items()}
    result["job_id"] = np.array([job["id"] for job in request["jobs"]])
    result["wavelength"] = np.array([get_electron_wavelength(float(job["beam_energy_kev"])) for job in request["jobs"]])
    result["diffsims_version"] = np.array(version("diffsims"))
    result["orix_version"] = np.array(version("orix"))
    return result


def main(argv: list[str]) -> None:
    """``peer_simulate.py request.json result.npz``."""
    if len(argv) != 2:
        raise SystemExit("usage: peer_simulate.py request.json result.npz")
    start = time.perf_counter()
    request = json.loads(Path(argv[0]).read_text())
    result = run(request)
    np.savez(argv[1], **result)
    print(f"peer: diffsims {result['diffsims_version']}: {len(request['jobs'])} jobs, {len(result['job'])} spots "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
