"""Compare stemkit's Bloch-wave simulator with abTEM's multislice (issue 11), in stemkit's environment.

Reads the cases (cases.py) and abTEM's exit-wave patterns (abtem_side.py), runs
``stemkit.physics.bloch.simulate_bloch`` on the same crystals, orientations and thicknesses
(absorption 0), and prints, per case and thickness, the direct beam, the strongest beams and the
agreement; then the sign and frame controls, a pendellösung curve, diagnostics and the rate.

How the two are matched: every stemkit beam is looked up in abTEM's pattern at the pixel whose
abTEM coordinate (1/Å) is nearest to stemkit's ``(kx, ky)``, with no use of Miller indices, so
agreement also proves that the two frames coincide (beam +z, kx = g_lab[0], ky = g_lab[1]).
Beams that fall on one pixel (HOLZ partners) are summed. Every abTEM pixel within K_COMPARE
1/Å is compared, so a beam stemkit lacks counts as a difference.

Models (both static, no absorption; abTEM's potential is the same Lobato potential):
``dw`` — the presets' Debye–Waller factors in both (stemkit: Crystal.structure_factor; abTEM:
Lobato with sigmas), the main comparison; ``static`` — every B = 0, as issue 11 asked.

Tolerance, fixed before the comparison: for every compared pixel (direct beam included) and
every thickness, |I_stemkit - I_abTEM| <= TOL_ABS of the incident beam, and for beams with
I_abTEM >= STRONG the relative error <= TOL_REL. The reference's own uncertainty (abTEM at the
default vs a finer sampling) is printed beside each case; where it exceeds TOL_ABS / 2 the
verdict says so.

Also: the structure-factor convention on a non-centrosymmetric crystal (ZnS): stemkit's own
structure matrix as built and conjugated, against abTEM.

Usage: .venv/bin/python benchmarks/bloch/compare.py [DATA_DIR] [--quick]   (--quick: no rate, no s_max series)
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import build_crystal, static_crystal  # noqa: E402

from stemkit.physics import crystal as preset_crystal  # noqa: E402
from stemkit.physics import interaction_constant, random_quaternions, wavelength_angstrom  # noqa: E402
from stemkit.physics.bloch import potential_coefficients, propagate, simulate_bloch, structure_matrix  # noqa: E402
from stemkit.physics.scattering import scattering_parameters  # noqa: E402

TOL_ABS = 0.02
TOL_REL = 0.10
STRONG = 0.05
K_COMPARE = 2.0  # 1/Å
SETTINGS = {
    "production": {"k_max": 2.0, "n_beams": 96, "s_max": 0.2},  # the call of issue 11
    "generous": {"k_max": 4.0, "n_beams": 1024, "s_max": 0.2},  # every beam out to 4 1/Å within |s| <= 0.2
}
S_MAX_SERIES = (0.2, 0.5, 1.0, 1.5)  # diagnostic on Cu [001] on axis, k_max = 4, all candidate beams
RATE_N = 256


def load(data: Path):
    cases = json.loads((data / "cases.json").read_text())["cases"]
    meta = json.loads((data / "abtem.json").read_text())
    arrays = np.load(data / "abtem.npz")
    return cases, meta, arrays


def model_crystal(case: dict, model: str):
    crystal = build_crystal(case["crystal"])
    return crystal if model == "dw" else static_crystal(crystal)


def run_stemkit(case: dict, model: str, setting: dict, thickness=None):
    thickness = case["thickness_angstrom"] if thickness is None else thickness
    return simulate_bloch(model_crystal(case, model), np.array(case["rotation"])[None],
                          beam_energy_kev=case["beam_energy_kev"], thickness=thickness, absorption=0.0, **setting)


def stemkit_on_grid(result, kx_grid: np.ndarray, ky_grid: np.ndarray, transform=None):
    """stemkit's intensities summed onto abTEM's pixels: (T, nx, ny), the largest |Δk|, and hkl per pixel."""
    kx, ky = result.kx[0], result.ky[0]
    valid = result.valid[0]
    if transform is not None:
        kx, ky = transform(kx, ky)
    ix = np.argmin(np.abs(kx_grid[None, :] - kx[:, None]), axis=1)
    iy = np.argmin(np.abs(ky_grid[None, :] - ky[:, None]), axis=1)
    error = np.hypot(kx_grid[ix] - kx, ky_grid[iy] - ky)
    inside = valid & (np.abs(kx) <= kx_grid.max() + 1e-9) & (np.abs(ky) <= ky_grid.max() + 1e-9)
    grid = np.zeros((result.intensity.shape[1], len(kx_grid), len(ky_grid)))
    np.add.at(grid, (slice(None), ix[inside], iy[inside]), result.intensity[0][:, inside])
    grid[:, np.argmin(np.abs(kx_grid)), np.argmin(np.abs(ky_grid))] += result.direct_beam[0]
    labels: dict[tuple[int, int], tuple[int, ...]] = {}
    strongest = result.intensity[0].max(axis=0)
    for i in np.flatnonzero(inside)[np.argsort(-strongest[inside])]:
        labels.setdefault((int(ix[i]), int(iy[i])), tuple(int(v) for v in result.hkl[0][i]))
    return grid, float(error[inside].max()) if inside.any() else 0.0, labels


def compare_grids(stemkit: np.ndarray, reference: np.ndarray, kx_grid, ky_grid) -> dict:
    """Per-thickness agreement within K_COMPARE."""
    mask = np.hypot(kx_grid[:, None], ky_grid[None, :]) <= K_COMPARE
    difference = np.abs(stemkit - reference)[:, mask]
    strong = reference[:, mask] >= STRONG
    relative = np.where(strong, difference / np.maximum(reference[:, mask], 1e-12), 0.0)
    worst = np.argmax(difference, axis=1)
    flat = np.argwhere(mask)
    return {"max_abs": difference.max(axis=1), "max_rel_strong": relative.max(axis=1),
            "worst_pixel": [tuple(int(v) for v in flat[w]) for w in worst]}


def fmt_hkl(hkl) -> str:
    return "".join(f"{v}" if v >= 0 else f"-{-v}" for v in hkl) if hkl is not None else "?"


def main() -> None:
    argv = sys.argv[1:]
    quick = "--quick" in argv
    positional = [a for a in argv if not a.startswith("--")]
    data = Path(positional[0]) if positional else HERE / "data"
    cases, meta, arrays = load(data)
    out: dict = {"abtem": {"version": meta["abtem_version"], "settings": meta["settings"]},
                 "tolerance": {"abs": TOL_ABS, "rel_strong": TOL_REL, "strong": STRONG, "k_compare": K_COMPARE},
                 "stemkit_settings": SETTINGS, "cases": [], "date": time.strftime("%Y-%m-%d"),
                 "machine": f"{platform.processor() or platform.machine()}, 2 cores shared with a training job"}
    by_index = {entry["index"]: entry for entry in meta["cases"]}
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent.parent, capture_output=True, text=True).stdout.strip()

    out["stemkit_bloch_version"] = {"last_commit": git("log", "-1", "--format=%h %cd", "--", "stemkit/physics/bloch.py"),
                                    "modified_in_tree": bool(git("status", "--porcelain", "--",
                                                                 "stemkit/physics/bloch.py"))}
    print(f"stemkit/physics/bloch.py: last commit {out['stemkit_bloch_version']['last_commit']}"
          f"{' (with uncommitted changes)' if out['stemkit_bloch_version']['modified_in_tree'] else ''}")

    # ---------------------------------------------------------------- units and parameters
    print("== Units: stemkit vs abTEM ==")
    units = []
    for energy in sorted({c["beam_energy_kev"] for c in cases}):
        entry = next(by_index[i] for i, c in enumerate(cases) if c["beam_energy_kev"] == energy and i in by_index)
        row = {"kev": energy, "wavelength": (wavelength_angstrom(energy), entry["wavelength_angstrom"]),
               "sigma": (interaction_constant(energy), entry["sigma_rad_per_volt_angstrom"])}
        units.append(row)
        print(f"{energy:g} keV: λ {row['wavelength'][0]:.7f} / {row['wavelength'][1]:.7f} Å, "
              f"σ {row['sigma'][0]:.6e} / {row['sigma'][1]:.6e} rad/(V·Å) "
              f"(relative differences {row['wavelength'][0] / row['wavelength'][1] - 1:+.1e}, "
              f"{row['sigma'][0] / row['sigma'][1] - 1:+.1e})")
    lobato = max(float(np.max(np.abs(np.concatenate(scattering_parameters(el)) - np.ravel(p))))
                 for el, p in meta["lobato_parameters"].items())
    print(f"Lobato & Van Dyck parameters of {', '.join(meta['lobato_parameters'])}: max |stemkit - abTEM| = {lobato:.1e}")
    out["units"] = units
    out["lobato_parameter_max_difference"] = lobato

    # ---------------------------------------------------------------- main table
    print(f"\n== Beam fractions, stemkit Bloch vs abTEM {meta['abtem_version']} multislice ==")
    print(f"tolerance: |ΔI| <= {TOL_ABS} of the incident beam for every pixel within {K_COMPARE} 1/Å, and relative "
          f"error <= {TOL_REL:.0%} for beams >= {STRONG}; ref ± = abTEM default vs finer sampling")
    for index, case in enumerate(cases):
        if index not in by_index or case.get("special"):
            continue
        case_out = {"name": case["name"], "thickness": case["thickness_angstrom"], "models": {}}
        for model in ("dw", "static"):
            key = f"{index}/{model}/plus"
            reference = arrays[f"{key}/pattern"]
            kx_grid, ky_grid = arrays[f"{key}/pattern_kx"], arrays[f"{key}/pattern_ky"]
            finer = arrays[f"{index}/{model}/finer/pattern"]
            spread = compare_grids(finer, reference, kx_grid, ky_grid)["max_abs"]
            model_out = {"reference_spread": spread.tolist(), "settings": {}}
            for name, setting in SETTINGS.items():
                start = time.perf_counter()
                result = run_stemkit(case, model, setting)
                seconds = time.perf_counter() - start
                grid, position_error, labels = stemkit_on_grid(result, kx_grid, ky_grid)
                metrics = compare_grids(grid, reference, kx_grid, ky_grid)
                ok = bool(np.all(metrics["max_abs"] <= TOL_ABS) and np.all(metrics["max_rel_strong"] <= TOL_REL))
                uncertain = bool(np.any(spread > TOL_ABS / 2))
                verdict = ("PASS" if ok else "FAIL") + (" (reference uncertain)" if uncertain else "")
                centre = (np.argmin(np.abs(kx_grid)), np.argmin(np.abs(ky_grid)))
                rows = []
                for t in range(len(case["thickness_angstrom"])):
                    ref_t = reference[t].copy()
                    ref_t[centre] = -1
                    mask = np.hypot(kx_grid[:, None], ky_grid[None, :]) <= K_COMPARE
                    order = np.argsort(np.where(mask, ref_t, -1), axis=None)[::-1][:3]
                    strongest = [(fmt_hkl(labels.get(tuple(int(v) for v in np.unravel_index(o, ref_t.shape)))),
                                  float(grid[t].ravel()[o]), float(reference[t].ravel()[o])) for o in order]
                    worst = metrics["worst_pixel"][t]
                    rows.append({"thickness": case["thickness_angstrom"][t], "direct": (float(grid[t][centre]),
                                 float(reference[t][centre])), "strongest": strongest,
                                 "max_abs": float(metrics["max_abs"][t]), "max_rel_strong": float(metrics["max_rel_strong"][t]),
                                 "worst": fmt_hkl(labels.get(worst)) if worst != centre else "000",
                                 "reference_spread": float(spread[t])})
                model_out["settings"][name] = {"verdict": verdict, "ok": ok, "position_error": position_error,
                                               "beams": int(result.valid.sum()) + 1, "seconds": seconds, "rows": rows}
                print(f"\n{case['name']} | {model} | stemkit {name} (k_max {setting['k_max']}, n_beams "
                      f"{setting['n_beams']}, s_max {setting['s_max']}; {int(result.valid.sum()) + 1} beams) | "
                      f"max |k_stemkit - k_abTEM pixel| {position_error:.1e} 1/Å | {verdict}")
                print(f"  {'t (Å)':>6s} {'direct sk/ab':>15s} {'max|ΔI|':>8s} {'at':>7s} {'rel':>6s} {'ref±':>7s}   "
                      "strongest three (hkl sk/ab)")
                for row in rows:
                    print(f"  {row['thickness']:6.1f} {row['direct'][0]:7.4f}/{row['direct'][1]:.4f} "
                          f"{row['max_abs']:8.4f} {row['worst']:>7s} {row['max_rel_strong']:6.1%} "
                          f"{row['reference_spread']:7.4f}   "
                          + "  ".join(f"{h} {a:.4f}/{b:.4f}" for h, a, b in row["strongest"]))
            case_out["models"][model] = model_out
        out["cases"].append(case_out)

    # ---------------------------------------------------------------- summary
    print("\n== Summary (max |ΔI| over pixels within 2 1/Å, per thickness; verdict) ==")
    summary = []
    for case_out in out["cases"]:
        for model, model_out in case_out["models"].items():
            for name, result in model_out["settings"].items():
                values = " ".join(f"{row['max_abs']:.3f}" for row in result["rows"])
                spread = " ".join(f"{v:.3f}" for v in model_out["reference_spread"])
                summary.append((case_out["name"], model, name, values, spread, result["verdict"]))
                print(f"{case_out['name']:30s} {model:6s} {name:10s} |ΔI| {values}  (ref± {spread})  {result['verdict']}")
    out["summary"] = summary

    # ---------------------------------------------------------------- sign and frame controls
    print("\n== Sign of the tilt and the frame (dw model, stemkit 'generous'): max |ΔI| within 2 1/Å over all thicknesses,"
          "\n   stemkit's (kx, ky) transformed as labelled before the lookup in abTEM's +tilt (or -tilt) pattern ==")
    transforms = {"as is": None, "kx -> -kx": lambda x, y: (-x, y), "ky -> -ky": lambda x, y: (x, -y),
                  "180° (-kx, -ky)": lambda x, y: (-x, -y), "swap kx, ky": lambda x, y: (y, x)}
    controls = []
    for index, case in enumerate(cases):
        if index not in by_index or case.get("special"):
            continue
        result = run_stemkit(case, "dw", SETTINGS["generous"])
        plus = arrays[f"{index}/dw/plus/pattern"]
        kx_grid, ky_grid = arrays[f"{index}/dw/plus/pattern_kx"], arrays[f"{index}/dw/plus/pattern_ky"]
        row = {"case": case["name"]}
        for label, transform in transforms.items():
            grid, error, _ = stemkit_on_grid(result, kx_grid, ky_grid, transform)
            # n/a where the transformed positions are not lattice points of the pattern (e.g. swapping
            # kx and ky on a rectangular cell); 0.02 1/Å is far below every pixel spacing (>= 0.09 1/Å)
            row[label] = float(compare_grids(grid, plus, kx_grid, ky_grid)["max_abs"].max()) if error < 0.02 else None
        if case["tilt_mrad"]:
            minus = arrays[f"{index}/dw/minus/pattern"]
            for label, transform in (("tilt -", None), ("tilt -, 180°", transforms["180° (-kx, -ky)"])):
                grid, _, _ = stemkit_on_grid(result, kx_grid, ky_grid, transform)
                row[label] = float(compare_grids(grid, minus, kx_grid, ky_grid)["max_abs"].max())
        controls.append(row)
        cells = "  ".join(f"{k}: {'n/a' if v is None else f'{v:.3f}'}" for k, v in row.items() if k != "case")
        print(f"{case['name']:30s} {cells}")
    out["controls"] = controls

    # ---------------------------------------------------------------- pendellösung
    special = [(i, c) for i, c in enumerate(cases) if c.get("special") == "pendellosung" and i in by_index]
    if special:
        index, case = special[0]
        print(f"\n== Pendellösung: {case['name']} (dw model) ==")
        hkl = (2, 0, 0)
        g = np.array(case["g_specimen"])[[tuple(h) for h in case["hkl"]].index(hkl)]
        kx_grid, ky_grid = arrays[f"{index}/dw/plus/pattern_kx"], arrays[f"{index}/dw/plus/pattern_ky"]
        ix, iy = np.argmin(np.abs(kx_grid - g[0])), np.argmin(np.abs(ky_grid - g[1]))
        abtem_curve = arrays[f"{index}/dw/plus/pattern"][:, ix, iy]
        abtem_direct = arrays[f"{index}/dw/plus/direct"]
        thickness = np.array(case["thickness_angstrom"])
        curves = {}
        for name, setting in SETTINGS.items():
            result = run_stemkit(case, "dw", setting)
            found = np.flatnonzero(np.all(result.hkl[0] == hkl, axis=1) & result.valid[0])
            curves[name] = result.intensity[0][:, found[0]] if found.size else np.zeros_like(thickness)
        crystal = model_crystal(case, "dw")
        k = 1 / wavelength_angstrom(case["beam_energy_kev"])
        xi = k / abs(potential_coefficients(crystal, hkl, case["beam_energy_kev"]))
        two_beam = np.sin(np.pi * thickness / xi) ** 2
        print(f"ξ_200 = K/|U_200| = {xi:.1f} Å; two-beam curve sin²(πt/ξ) for reference")
        print(f"  {'t (Å)':>6s} {'abTEM':>7s} {'sk prod':>7s} {'sk gen':>7s} {'2-beam':>7s} {'direct ab':>9s}")
        for t in range(0, len(thickness), max(1, len(thickness) // 14)):
            print(f"  {thickness[t]:6.1f} {abtem_curve[t]:7.4f} {curves['production'][t]:7.4f} "
                  f"{curves['generous'][t]:7.4f} {two_beam[t]:7.4f} {abtem_direct[t]:9.4f}")
        stats = {name: {"max_abs": float(np.max(np.abs(c - abtem_curve))),
                        "rms": float(np.sqrt(np.mean((c - abtem_curve) ** 2)))} for name, c in curves.items()}
        first_max = {name: float(thickness[np.argmax(c[: len(c) // 2])]) for name, c in
                     {"abTEM": abtem_curve, **curves, "two-beam": two_beam}.items()}
        for name, value in stats.items():
            print(f"  stemkit {name}: max |ΔI_200| = {value['max_abs']:.4f}, rms {value['rms']:.4f} over "
                  f"{len(thickness)} thicknesses")
        print("  first maximum of I_200 at t = " + ", ".join(f"{k} {v:.1f} Å" for k, v in first_max.items()))
        out["pendellosung"] = {"case": case["name"], "xi_angstrom": float(xi), "thickness": thickness.tolist(),
                               "abtem": abtem_curve.tolist(), **{k: v.tolist() for k, v in curves.items()},
                               "two_beam": two_beam.tolist(), "stats": stats, "first_maximum": first_max}

    # ---------------------------------------------------------------- diagnostics
    diagnose(cases, arrays, by_index, out, quick)
    out["conjugate_test"] = conjugate_test(cases, arrays, by_index)

    # ---------------------------------------------------------------- rate
    if not quick:
        out["rate"] = rate()
    (HERE / "results.json").write_text(json.dumps(out, indent=1, default=float))
    print(f"\nwrote {HERE / 'results.json'}")


def diagnose(cases, arrays, by_index, out, quick) -> None:
    """Cu [001] on axis, dw: projection approximation vs abTEM's projected potential; the s_max series."""
    name = "Cu [001] on axis 200 keV"
    index = next((i for i, c in enumerate(cases) if c["name"] == name), None)
    if index is None or f"{index}/dw/projected/direct" not in arrays:
        return
    case = cases[index]
    print(f"\n== Diagnostics: {name}, dw model, direct beam at t = "
          f"{', '.join(f'{t:.0f}' for t in case['thickness_angstrom'])} Å ==")
    lines = {"abTEM, infinite projection (default)": arrays[f"{index}/dw/plus/direct"],
             "abTEM, infinite projection, finer": arrays[f"{index}/dw/finer/direct"],
             "abTEM, finite projection (3D potential per slice), pixel 0.0125 Å": arrays[f"{index}/dw/finite/direct"],
             "abTEM, projected potential (no HOLZ)": arrays[f"{index}/dw/projected/direct"]}
    # stemkit with ZOLZ beams only (projection approximation), through its public structure_matrix/propagate
    crystal = model_crystal(case, "dw")
    energy = case["beam_energy_kev"]
    k = 1 / wavelength_angstrom(energy)
    rotation = np.array(case["rotation"])
    bound = 24
    hkl = np.stack(np.meshgrid(*[np.arange(-bound, bound + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[hkl @ np.array(case["zone_axis"]) == 0]
    g_lab = crystal.g_vectors(hkl) @ rotation.T
    norm = np.linalg.norm(g_lab, axis=1)
    factor = np.abs(crystal.structure_factor(hkl))
    keep = (norm <= 5.0) & ((factor > 1e-6 * factor.max()) | (norm == 0))
    hkl, g_lab, norm = hkl[keep][np.argsort(norm[keep])], g_lab[keep][np.argsort(norm[keep])], np.sort(norm[keep])
    s = np.sqrt(k**2 - g_lab[:, 0] ** 2 - g_lab[:, 1] ** 2) - k - g_lab[:, 2]
    matrix = structure_matrix(s[None], hkl[None], crystal, energy)
    amplitude = propagate(matrix, case["thickness_angstrom"])[0]
    lines[f"stemkit structure_matrix+propagate, ZOLZ only ({len(hkl)} beams to 5 1/Å)"] = np.abs(amplitude[:, 0]) ** 2
    for setting_name, setting in SETTINGS.items():
        lines[f"stemkit simulate_bloch {setting_name}"] = run_stemkit(case, "dw", setting).direct_beam[0]
    if not quick:
        for s_max in S_MAX_SERIES:
            result = run_stemkit(case, "dw", {"k_max": 4.0, "n_beams": 6000, "s_max": s_max})
            lines[f"stemkit simulate_bloch k_max 4, s_max {s_max} (all {int(result.valid.sum()) + 1} beams)"] = \
                result.direct_beam[0]
    for label, values in lines.items():
        print(f"  {label:70s} " + " ".join(f"{v:.4f}" for v in values))
    out["diagnostics"] = {"case": name, "direct_beam": {k: np.asarray(v).tolist() for k, v in lines.items()}}


def conjugate_test(cases, arrays, by_index) -> list:
    """Non-centrosymmetric ZnS: stemkit's structure matrix as built (U_g from F(g) = Σ f exp(+2πi g·r)) and
    conjugated (U_g from F(g)*, i.e. the Fourier coefficient of U(r) = Σ U_g exp(+2πi g·r)), on the same
    beams ('generous'), each against abTEM as is. Uses stemkit's public structure_matrix and propagate."""
    print("\n== Structure-factor convention, non-centrosymmetric ZnS (dw, 'generous' beams): max |ΔI| vs abTEM "
          "within 2 1/Å per thickness ==")
    rows = []
    for index, case in enumerate(cases):
        if index not in by_index or case["crystal"] != "ZnS":
            continue
        crystal = model_crystal(case, "dw")
        result = run_stemkit(case, "dw", SETTINGS["generous"])
        valid = result.valid[0]
        hkl = np.concatenate([np.zeros((1, 3), np.int64), result.hkl[0][valid]])
        s = np.concatenate([[0.0], result.excitation_error[0][valid]])
        matrix = structure_matrix(s[None], hkl[None], crystal, case["beam_energy_kev"])
        kx_grid, ky_grid = arrays[f"{index}/dw/plus/pattern_kx"], arrays[f"{index}/dw/plus/pattern_ky"]
        reference = arrays[f"{index}/dw/plus/pattern"]
        row = {"case": case["name"]}
        for label, m in (("as built (F)", matrix), ("conjugated (F*)", np.conj(matrix))):
            amplitude = propagate(m, case["thickness_angstrom"])[0]
            fraction = np.abs(amplitude) ** 2

            class _Result:  # the layout stemkit_on_grid reads
                kx, ky = result.kx[:, valid], result.ky[:, valid]
                valid_ = None
            _Result.valid = np.ones((1, valid.sum()), bool)
            _Result.hkl = result.hkl[:, valid]
            _Result.intensity = fraction[None, :, 1:]
            _Result.direct_beam = fraction[None, :, 0]
            grid, _, _ = stemkit_on_grid(_Result, kx_grid, ky_grid)
            row[label] = compare_grids(grid, reference, kx_grid, ky_grid)["max_abs"].tolist()
        rows.append(row)
        print(f"{case['name']:30s} " + "  ".join(f"{k}: {' '.join(f'{v:.3f}' for v in vals)}"
                                               for k, vals in row.items() if k != "case"))
    return rows


def rate() -> dict:
    """Patterns/s of simulate_bloch: 256 random Cu2O orientations, 200 keV, 3 thicknesses."""
    import torch

    crystal = preset_crystal("Cu2O")
    orientations = random_quaternions(RATE_N, seed=11)
    thickness = [50.0, 100.0, 200.0]
    print(f"\n== Rate: simulate_bloch, {RATE_N} random Cu2O orientations (preset, with B), 200 keV, t = 50, 100, "
          f"200 Å, k_max 2, s_max 0.2, absorption 0.05 (default); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads ==")
    rates = {}
    for n_beams in (64, 96):
        simulate_bloch(crystal, orientations[:8], beam_energy_kev=200.0, thickness=thickness, n_beams=n_beams)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            simulate_bloch(crystal, orientations, beam_energy_kev=200.0, thickness=thickness, n_beams=n_beams)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rates[n_beams] = {"seconds": times, "patterns_per_second": RATE_N / median}
        print(f"  n_beams {n_beams}: {RATE_N / median:.0f} patterns/s (median of 3: {median:.2f} s; runs "
              f"{', '.join(f'{t:.2f}' for t in times)} s)")
    return rates


if __name__ == "__main__":
    main()
