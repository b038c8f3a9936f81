"""stemkit's kinematic simulator against an independent one, diffsims 0.7 (issue 3).

Run with stemkit's interpreter (``.venv/bin/python``); diffsims runs in its own environment
(``.peers/diffsims``, made by ``setup_peer.sh``) through ``peer_simulate.py``, exchanging a
JSON request and an npz result. ``bash benchmarks/compare_kinematic/run.sh`` does both.

What is compared
----------------
For Cu and Cu2O along [001], [011], [111] and 3° off [001] (300 keV; two cases at 200 keV,
one with B = 0), both codes get the same crystal (full unit cell, the same isotropic B per
element), beam energy, k_max and excitation-error model, and their spots are matched by hkl:

- positions: max ``|Δk|`` over all matched spots, in 1/Å (tolerance ``POSITION_TOLERANCE``);
- relative intensities of the strongest reflections (the ``N_STRONGEST`` strongest of each
  code, united; each code normalised to its own strongest spot): every one must be found by
  both codes, and ``|Î_stemkit - Î_peer| / Î_peer`` must stay below ``INTENSITY_TOLERANCE``.

Physics settings, matched term by term
--------------------------------------
- Shape factor: stemkit ``thickness=t`` gives ``(sin(π t s)/(π t s))²``; diffsims' ``sin2c``
  model with ``minima_number=1`` and ``shape_factor_width=1/t`` is the same function. Both keep
  ``|s| < S_MAX``. (stemkit's Gaussian ``excitation_error_width`` has no diffsims counterpart.)
- Excitation error: both exact, ``|s| = |K - sqrt(K² - gx² - gy²)| ± g_z`` measured along the
  beam; diffsims' beam runs along -z, so its ``s`` has the opposite sign; the shape factor is even.
- Scattering factors: both Lobato & Van Dyck (2014), the same table; Debye–Waller
  ``exp(-B g²/4)`` in both. A second, informational run uses diffsims' ``xtables``
  (International Tables C 4.3.2.3, Peng et al. 5-Gaussian fit) to show how much the choice
  of parametrisation alone moves relative intensities.
- Absolute scale: stemkit's intensity is ``γ² |F|²`` × shape, diffsims' ``|F|²`` × shape, so
  their ratio must be ``γ²`` (printed).

Conventions (derived from diffsims' source, verified here by the positions)
---------------------------------------------------------------------------
stemkit: ``g_lab = R g_crystal``, beam along +z, spot at ``(kx, ky) = g_lab[:2]``.
diffsims rotates reciprocal vectors by ``~rotation`` (``xyz = Oᵀ g_crystal`` for the orix
matrix ``O = Rotation.to_matrix()``) and puts the Ewald sphere's centre at ``+z/λ``: its beam
runs along -z. Its lab frame is stemkit's turned 180° about y, ``D = diag(-1, 1, -1)``:
``g_lab = D xyz``, hence ``R = D Oᵀ`` and ``O = Rᵀ D``. Two wrong conversions are run as
negative controls and must fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stemkit.physics import Crystal, axis_angle_to_matrix, crystal, relativistic_factor, simulate_kinematic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_PEER_PYTHON = ROOT / ".peers" / "diffsims" / "bin" / "python"

K_MAX = 2.0  # 1/Å; no Cu or Cu2O reflection lies on this sphere
THICKNESS = 100.0  # Å
S_MAX = 0.05  # 1/Å
N_STRONGEST = 20
POSITION_TOLERANCE = 1e-4  # 1/Å, far below a detector pixel (~5e-3 1/Å)
INTENSITY_TOLERANCE = 0.01  # relative, of intensities normalised to the strongest spot
IN_PLANE_DEG = 20.0  # turn every pattern about the beam, so that no x or y mirror is a symmetry of it

#: diffsims' lab frame -> stemkit's: a 180° turn about y (diffsims' beam runs along -z).
D = np.diag([-1.0, 1.0, -1.0])


# ------------------------------------------------------------------ conventions
def stemkit_to_diffsims(rotation: NDArray) -> NDArray:
    """orix matrix ``O`` that makes diffsims simulate stemkit's orientation ``R``: ``O = Rᵀ D``."""
    return rotation.T @ D


def diffsims_to_stemkit_lab(xyz: NDArray) -> NDArray:
    """diffsims' lab-frame vectors (n, 3) in stemkit's lab frame: ``D xyz``."""
    return xyz @ D.T


CONTROLS = {
    "no beam flip (O = Rᵀ)": lambda rotation: rotation.T,
    "orix inverse mixed up (O = D R)": lambda rotation: D @ rotation,
}


# ------------------------------------------------------------------ orientations
def align_to_beam(uvw: NDArray) -> NDArray:
    """The smallest rotation taking the crystal direction ``uvw`` (cubic) to the beam, +z."""
    direction = np.asarray(uvw, dtype=float) / np.linalg.norm(uvw)
    axis = np.cross(direction, [0.0, 0.0, 1.0])
    if np.linalg.norm(axis) < 1e-12:
        return np.eye(3)
    angle = np.degrees(np.arccos(np.clip(direction[2], -1.0, 1.0)))
    return axis_angle_to_matrix(axis, angle)


def zone_axis(uvw: tuple[int, int, int], in_plane_deg: float = IN_PLANE_DEG) -> NDArray:
    """Orientation ``R`` with ``[uvw]`` along the beam, then turned ``in_plane_deg`` about it."""
    return axis_angle_to_matrix([0.0, 0.0, 1.0], in_plane_deg) @ align_to_beam(uvw)


def off_axis(tilt_deg: float = 3.0, tilt_azimuth_deg: float = 35.0) -> NDArray:
    """[001] tilted by ``tilt_deg`` about an in-plane lab axis at ``tilt_azimuth_deg`` from x."""
    azimuth = np.radians(tilt_azimuth_deg)
    tilt = axis_angle_to_matrix([np.cos(azimuth), np.sin(azimuth), 0.0], tilt_deg)
    return tilt @ zone_axis((0, 0, 1))


ORIENTATIONS = {"[001]": zone_axis((0, 0, 1)), "[011]": zone_axis((0, 1, 1)), "[111]": zone_axis((1, 1, 1)),
                "3° off [001]": off_axis()}


# ------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Case:
    """One comparison: a crystal in one orientation at one beam energy."""

    crystal: str
    zone: str
    beam_energy_kev: float = 300.0
    debye_waller: bool = True  # False: B = 0 in both codes

    @property
    def label(self) -> str:
        """A short unique name."""
        extra = "" if self.debye_waller else ", B=0"
        return f"{self.crystal} {self.zone} {self.beam_energy_kev:g} keV{extra}"

    @property
    def rotation(self) -> NDArray:
        """stemkit's ``R``."""
        return ORIENTATIONS[self.zone]


def default_cases() -> list[Case]:
    """Cu and Cu2O along every orientation at 300 keV, two at 200 keV and one with B = 0."""
    cases = [Case(name, zone) for name in ("Cu", "Cu2O") for zone in ORIENTATIONS]
    return cases + [Case("Cu", "[011]", 200.0), Case("Cu2O", "3° off [001]", 200.0),
                    Case("Cu2O", "[111]", 300.0, debye_waller=False)]


def stemkit_crystal(case: Case) -> Crystal:
    """The preset crystal, with every B set to 0 when the case says so."""
    xtal = crystal(case.crystal)
    if case.debye_waller:
        return xtal
    atoms = [replace(atom, b_iso=0.0) for atom in xtal.atoms]
    return Crystal(*xtal.lattice_parameters, atoms, name=xtal.name, space_group=xtal.space_group)


def crystal_spec(xtal: Crystal) -> dict[str, Any]:
    """The crystal as the request's plain JSON: lattice, space group, full unit cell with B."""
    atoms = [{"element": a.element, "position": list(a.position), "occupancy": a.occupancy, "b_iso": a.b_iso}
             for a in xtal.atoms]
    return {"lattice": list(xtal.lattice_parameters), "space_group": xtal.space_group, "atoms": atoms}


# ------------------------------------------------------------------ peer request and result
@dataclass
class Job:
    """One peer job: a case, the orix matrix it gets and the scattering factors it uses."""

    case: Case
    orix_matrix: NDArray
    scattering_params: str = "lobato"
    role: str = "test"  # "test", "xtables" or a control's name
    spots: dict[str, NDArray] = field(default_factory=dict)

    def as_request(self, index: int) -> dict[str, Any]:
        """The job's entry in the JSON request."""
        return {"id": f"{index}: {self.role}: {self.case.label}", "crystal": self.case.crystal,
                "beam_energy_kev": self.case.beam_energy_kev, "k_max": K_MAX, "max_excitation_error": S_MAX,
                "shape_factor": {"model": "sin2c", "width": 1.0 / THICKNESS, "minima_number": 1},
                "scattering_params": self.scattering_params, "debye_waller": self.case.debye_waller,
                "orientations": [self.orix_matrix.tolist()]}


def build_jobs(cases: list[Case]) -> list[Job]:
    """The test jobs, the xtables jobs, and the negative controls (Cu, 300 keV)."""
    jobs = [Job(case, stemkit_to_diffsims(case.rotation)) for case in cases]
    jobs += [Job(case, stemkit_to_diffsims(case.rotation), "xtables", "xtables") for case in cases]
    for name, wrong in CONTROLS.items():
        jobs += [Job(case, wrong(case.rotation), role=name)
                 for case in cases if case.crystal == "Cu" and case.beam_energy_kev == 300.0]
    return jobs


def run_peer(jobs: list[Job], peer_python: Path, workdir: Path) -> dict[str, Any]:
    """Write the request, run ``peer_simulate.py`` with the peer's python, attach its spots to ``jobs``."""
    names = sorted({job.case.crystal for job in jobs})
    request = {"crystals": {name: crystal_spec(crystal(name)) for name in names},
               "jobs": [job.as_request(i) for i, job in enumerate(jobs)]}
    request_path, result_path = workdir / "request.json", workdir / "peer_result.npz"
    request_path.write_text(json.dumps(request, indent=1))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    subprocess.run([str(peer_python), str(HERE / "peer_simulate.py"), str(request_path), str(result_path)],
                   check=True, env=env)
    with np.load(result_path) as result:
        data = {key: result[key] for key in result.files}
    for i, job in enumerate(jobs):
        rows = data["job"] == i
        lab = diffsims_to_stemkit_lab(data["xyz"][rows])
        job.spots = {"hkl": data["hkl"][rows], "kx": lab[:, 0], "ky": lab[:, 1], "intensity": data["intensity"][rows]}
    return data


# ------------------------------------------------------------------ stemkit
def stemkit_spots(case: Case, dtype: str) -> dict[str, NDArray]:
    """stemkit's spots of a case, with the same k_max, thickness and s_max as the peer."""
    patterns = simulate_kinematic(stemkit_crystal(case), case.rotation, beam_energy_kev=case.beam_energy_kev,
                                  k_max=K_MAX, thickness=THICKNESS, s_max=S_MAX, dtype=dtype)
    valid = patterns.valid[0]
    return {"hkl": patterns.hkl[0][valid], "kx": patterns.kx[0][valid].astype(float),
            "ky": patterns.ky[0][valid].astype(float), "intensity": patterns.intensity[0][valid].astype(float)}


# ------------------------------------------------------------------ comparison
@dataclass(frozen=True)
class Metrics:
    """How two sets of spots of one pattern agree."""

    n_ours: int
    n_peer: int
    n_matched: int
    max_unmatched: float  # largest intensity of a spot found by one code only, relative to its strongest
    n_strongest: int  # size of the united strongest set
    n_strongest_missing: int  # strongest spots found by only one code
    max_position_error: float  # 1/Å, over all matched spots
    median_intensity_error: float  # relative, over the strongest set
    max_intensity_error: float
    scale: float  # median I_stemkit / I_peer over the strongest set
    gamma_squared: float  # the scale it must have

    def passed(self) -> bool:
        """Every strongest spot found by both; positions, relative intensities and scale within tolerance."""
        return (self.n_strongest_missing == 0 and self.max_position_error < POSITION_TOLERANCE
                and self.max_intensity_error < INTENSITY_TOLERANCE
                and abs(self.scale / self.gamma_squared - 1) < INTENSITY_TOLERANCE)


def _index(hkl: NDArray) -> dict[tuple[int, int, int], int]:
    """hkl -> row, refusing duplicates."""
    index = {tuple(int(v) for v in row): i for i, row in enumerate(hkl)}
    if len(index) != len(hkl):
        raise ValueError("duplicate hkl in one pattern")
    return index


def _strongest(spots: dict[str, NDArray], n: int) -> set[tuple[int, int, int]]:
    """hkl of the ``n`` most intense spots."""
    order = np.argsort(-spots["intensity"], kind="stable")[:n]
    return {tuple(int(v) for v in spots["hkl"][i]) for i in order}


def _max_unmatched(spots: dict[str, NDArray], index: dict[tuple[int, int, int], int],
                   other: dict[tuple[int, int, int], int]) -> float:
    """Largest normalised intensity among the spots of ``spots`` that ``other`` lacks (0 if none)."""
    rows = [row for h, row in index.items() if h not in other]
    return float(spots["intensity"][rows].max() / spots["intensity"].max()) if rows else 0.0


def compare_spots(ours: dict[str, NDArray], peer: dict[str, NDArray], beam_energy_kev: float,
                  n_strongest: int = N_STRONGEST) -> Metrics:
    """Match two patterns by hkl; compare positions (all matched) and relative intensities (strongest)."""
    mine, theirs = _index(ours["hkl"]), _index(peer["hkl"])
    common = sorted(set(mine) & set(theirs))
    i = np.array([mine[h] for h in common], dtype=int)
    j = np.array([theirs[h] for h in common], dtype=int)
    dk = np.hypot(ours["kx"][i] - peer["kx"][j], ours["ky"][i] - peer["ky"][j]) if common else np.array([np.inf])
    strongest = _strongest(ours, n_strongest) | _strongest(peer, n_strongest)
    both = sorted(strongest & set(mine) & set(theirs))
    a = np.array([ours["intensity"][mine[h]] for h in both]) / ours["intensity"].max()
    b = np.array([peer["intensity"][theirs[h]] for h in both]) / peer["intensity"].max()
    relative = np.abs(a - b) / b if both else np.array([np.inf])
    raw = np.array([ours["intensity"][mine[h]] / peer["intensity"][theirs[h]] for h in both]) if both else [np.nan]
    unmatched = max(_max_unmatched(ours, mine, theirs), _max_unmatched(peer, theirs, mine))
    return Metrics(len(mine), len(theirs), len(common), unmatched, len(strongest), len(strongest) - len(both),
                   float(dk.max()), float(np.median(relative)), float(relative.max()), float(np.median(raw)),
                   relativistic_factor(beam_energy_kev) ** 2)


# ------------------------------------------------------------------ report
HEADER = ("| case | spots stemkit / diffsims | matched | unmatched, max Î | strongest (missing) "
          "| max \\|Δk\\| (1/Å) | median / max rel. ΔI | I_stemkit/I_diffsims (γ²) | result |")


def table_row(case: Case, m: Metrics, verdict: str) -> str:
    """One markdown table row."""
    return (f"| {case.label} | {m.n_ours} / {m.n_peer} | {m.n_matched} | {m.max_unmatched:.0e} "
            f"| {m.n_strongest} ({m.n_strongest_missing}) | {m.max_position_error:.1e} "
            f"| {m.median_intensity_error:.1e} / {m.max_intensity_error:.1e} "
            f"| {m.scale:.5f} ({m.gamma_squared:.5f}) | {verdict} |")


def print_table(title: str, rows: list[tuple[Case, Metrics, str]]) -> None:
    """Print a markdown table of cases."""
    print(f"\n{title}\n\n{HEADER}\n|---|---|---|---|---|---|---|---|---|")
    for case, metrics, verdict in rows:
        print(table_row(case, metrics, verdict))


def _metrics(jobs: list[Job], role: str, ours: dict[Case, dict[str, NDArray]]) -> list[tuple[Job, Metrics]]:
    """Compare every job of one role with stemkit's spots."""
    return [(job, compare_spots(ours[job.case], job.spots, job.case.beam_energy_kev))
            for job in jobs if job.role == role]


def report_tests(jobs: list[Job], ours: dict[str, dict[Case, dict[str, NDArray]]]) -> bool:
    """One PASS/FAIL table per stemkit precision; True if every case passed in every one."""
    all_passed = True
    for dtype, spots in ours.items():
        rows = _metrics(jobs, "test", spots)
        print_table(f"stemkit ({dtype}) against diffsims (Lobato & Van Dyck in both). Tolerance: each of the "
                    f"{N_STRONGEST} strongest spots of either code found by both; max |Δk| < {POSITION_TOLERANCE:g} "
                    f"1/Å; relative intensities and the absolute scale (γ²) within {INTENSITY_TOLERANCE:.0%}.",
                    [(job.case, m, "PASS" if m.passed() else "FAIL") for job, m in rows])
        n_passed = sum(m.passed() for _, m in rows)
        print(f"\n{dtype}: {n_passed} passed, {len(rows) - n_passed} failed")
        all_passed &= n_passed == len(rows)
    return all_passed


def report_controls(jobs: list[Job], ours: dict[Case, dict[str, NDArray]]) -> bool:
    """Negative controls: every case whose wrong matrix really differs must fail. True if so."""
    detected_all = True
    for name, wrong in CONTROLS.items():
        rows, detected = [], True
        for job, m in _metrics(jobs, name, ours):
            same = np.allclose(D @ wrong(job.case.rotation).T, job.case.rotation, atol=1e-12)
            detected &= same or not m.passed()
            verdict = ("FAIL (expected)" if not m.passed()
                       else "pass (same matrix here)" if same else "PASS: NOT DETECTED")
            rows.append((job.case, m, verdict))
        print_table(f"Negative control, wrong conversion '{name}': must fail wherever it changes the geometry "
                    f"({'detected' if detected else 'NOT DETECTED'}).", rows)
        detected_all &= detected
    return detected_all


def main(argv: list[str] | None = None) -> int:
    """Run every case through both simulators and print the comparison; exit status 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON,
                        help="the peer environment's interpreter (default: .peers/diffsims/bin/python)")
    args = parser.parse_args(argv)
    if not args.peer_python.exists():
        raise SystemExit(f"no peer interpreter at {args.peer_python}: run benchmarks/compare_kinematic/setup_peer.sh")
    cases = default_cases()
    jobs = build_jobs(cases)
    with tempfile.TemporaryDirectory() as workdir:
        data = run_peer(jobs, args.peer_python, Path(workdir))
    print(f"diffsims {data['diffsims_version']}, orix {data['orix_version']}; k_max {K_MAX} 1/Å, foil t = "
          f"{THICKNESS:g} Å (sinc²; diffsims 'sin2c', minima_number=1, width 1/t), |s| < {S_MAX} 1/Å, patterns "
          f"turned {IN_PLANE_DEG:g}° about the beam; Î = intensity / strongest spot of the same code")
    ours = {dtype: {case: stemkit_spots(case, dtype) for case in cases} for dtype in ("float32", "float64")}
    passed = report_tests(jobs, ours)
    print_table("Sensitivity, not a test: stemkit (Lobato & Van Dyck) against diffsims with 'xtables' "
                "(International Tables C 4.3.2.3) scattering factors, stemkit float64.",
                [(job.case, m, "info") for job, m in _metrics(jobs, "xtables", ours["float64"])])
    controls = report_controls(jobs, ours["float32"])
    print(f"\nresult: {'PASS' if passed and controls else 'FAIL'} (tests {'passed' if passed else 'FAILED'}; "
          f"negative controls {'detected' if controls else 'NOT DETECTED'})")
    return 0 if passed and controls else 1


if __name__ == "__main__":
    sys.exit(main())
