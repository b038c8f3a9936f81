"""Checks of the multislice test set (issue 11), in stemkit's environment.

1. Orientation convention, positions: for every case simulated (the two check cases ``check-zone-axis``,
   Cu [011] on axis, and ``check-off-axis``, Cu2O in a random orientation, and every scored case), the
   reflections abTEM's side listed (numpy, from the lattice and R) and the peaks of |Ψ(k)|² measured on
   abTEM's exit wave are compared, hkl by hkl, with the positions stemkit's own kinematic simulator
   (``simulate_kinematic``, float64) gives the same hkl for the same R. In detector pixels (0.025 1/Å).
2. Orientation convention, beam direction: positions cannot tell R from the crystal mirrored through the
   specimen plane (for these centrosymmetric crystals that is C2z·R, 180° about the beam, whose spots sit at
   the same places with g_z reversed, so other reflections are excited). abTEM's intensities are compared
   with stemkit's Bloch waves (generous: k_max 4, 512 beams, s_max 0.3, no absorption) for R and for C2z·R;
   R must agree far better. Also: abTEM against the production Bloch setting the ``bloch`` set uses (128
   beams, k_max at the detector's corner, absorption 0.05). Every case; the first few printed, then a summary.
3. Convergence: the same cases with other abTEM settings (``spots-TAG`` folders): lateral block, sampling,
   slice thickness; differences of the spot intensities (hkl by hkl) against the default.

Usage: .venv/bin/python benchmarks/orientation/multislice/checks.py [--tags L77 ...] [--sign-cases N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BLOCH_OPTICS, DATA, DETECTOR_PIXEL, crystal_of, load_cases, load_spots  # noqa: E402

from stemkit.physics.bloch import simulate_bloch  # noqa: E402
from stemkit.physics.kinematic import simulate_kinematic  # noqa: E402

C2Z = np.diag([-1.0, -1.0, 1.0])
STRONG = 0.01  # fraction of the beam: "strong" spots for relative differences
VISIBLE = 0.005  # fraction of the beam: measured positions reported separately for spots at least this bright
MERGE = 0.05  # 1/Å: abtem_side.MERGE


def _key(hkl: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in row) for row in np.asarray(hkl).reshape(-1, 3)]


def positions(case: dict, spots: dict) -> dict:
    crystal = crystal_of(case["phase"])
    rotation = np.array(case["rotation"])
    kin = simulate_kinematic(crystal, rotation[None], beam_energy_kev=case["beam_energy_kev"], k_max=3.0,
                             thickness=10.0 * case["thickness_nm"], min_relative_intensity=0.0, dtype=np.float64)
    valid = kin.valid[0]
    lookup = {k: (x, y) for k, x, y in zip(_key(kin.hkl[0][valid]), kin.kx[0][valid], kin.ky[0][valid])}
    listed = _key(spots["hkl"])
    found = [i for i, k in enumerate(listed) if k in lookup and any(k)]
    reference = np.array([lookup[listed[i]] for i in found])
    listed_error = np.hypot(spots["kx"][found] - reference[:, 0], spots["ky"][found] - reference[:, 1])
    measured = np.isfinite(spots["measured_kx"])
    index = spots["measured_index"][measured]
    ref = np.array([lookup[listed[i]] for i in index]).reshape(-1, 2)
    measured_error = np.hypot(spots["measured_kx"][measured] - ref[:, 0], spots["measured_ky"][measured] - ref[:, 1])
    bright = spots["intensity"][index] >= VISIBLE
    return {"measured_errors_px": (measured_error / DETECTOR_PIXEL).tolist(),
            "measured_bright": bright.tolist(), "listed_compared": len(found),
            "listed_missing_in_stemkit": int(sum(any(k) for k in listed) - len(found)),
            "listed_max_px": float(listed_error.max() / DETECTOR_PIXEL),
            "measured": int(measured.sum()), "measured_failed": int((~measured).sum()),
            "measured_max_px": float(measured_error.max() / DETECTOR_PIXEL) if measured.any() else np.nan,
            "measured_median_px": float(np.median(measured_error) / DETECTOR_PIXEL) if measured.any() else np.nan,
            "measured_intensities": spots["intensity"][index].tolist()}


def _bloch_on_spots(crystal, rotation, case, spots, **settings) -> np.ndarray:
    """stemkit's Bloch-wave intensities summed onto abTEM's spots: each beam to the nearest listed spot within
    MERGE (abTEM's list has one spot for reflections projected closer than that)."""
    b = simulate_bloch(crystal, rotation[None], beam_energy_kev=case["beam_energy_kev"],
                       thickness=[10.0 * case["thickness_nm"]], **settings)
    valid = b.valid[0]
    kx = np.concatenate([[0.0], b.kx[0][valid]])
    ky = np.concatenate([[0.0], b.ky[0][valid]])
    intensity = np.concatenate([[b.direct_beam[0, 0]], b.intensity[0, 0][valid]])
    distance, nearest = cKDTree(np.stack([spots["kx"], spots["ky"]], axis=1)).query(np.stack([kx, ky], axis=1))
    inside = distance < MERGE
    return np.bincount(nearest[inside], weights=intensity[inside], minlength=len(spots["kx"]))


def beam_direction(case: dict, spots: dict) -> dict:
    """abTEM vs stemkit Bloch for R and for C2z·R (its spots lie at the same places), spots on the detector."""
    crystal = crystal_of(case["phase"])
    rotation = np.array(case["rotation"])
    on_detector = (np.abs(spots["kx"]) <= 1.6) & (np.abs(spots["ky"]) <= 1.6)
    abtem = spots["intensity"]
    generous = dict(k_max=4.0, n_beams=512, s_max=0.3, absorption=0.0)
    out = {}
    for label, rot, settings in (("R", rotation, generous), ("C2z·R", C2Z @ rotation, generous),
                                 ("R, production", rotation, dict(k_max=float(np.hypot(1.6, 1.6)), n_beams=128,
                                                                  absorption=BLOCH_OPTICS.absorption))):
        stemkit = _bloch_on_spots(crystal, rot, case, spots, **settings)
        d = np.abs(stemkit - abtem)[on_detector]
        # as the detector sees them: each pattern's spots as fractions of what reaches the detector
        n = np.abs(stemkit[on_detector] / stemkit[on_detector].sum() - abtem[on_detector] / abtem[on_detector].sum())
        strong = on_detector & ((abtem > STRONG) | (stemkit > STRONG))
        out[label] = {"max_abs": float(d.max()), "sum_abs": float(d.sum()), "max_abs_normalised": float(n.max()),
                      "direct": (float(abtem[0]), float(stemkit[0])),
                      "correlation_strong": float(np.corrcoef(abtem[strong], stemkit[strong])[0, 1])
                      if strong.sum() > 2 else np.nan, "n_strong": int(strong.sum())}
    return out


def convergence(spots: dict, other: dict) -> dict:
    a = dict(zip(_key(spots["hkl"]), spots["intensity"]))
    b = dict(zip(_key(other["hkl"]), other["intensity"]))
    common = [k for k in a if k in b]
    x, y = np.array([a[k] for k in common]), np.array([b[k] for k in common])
    on = (np.abs(spots["kx"]) <= 1.6) & (np.abs(spots["ky"]) <= 1.6)
    keep = [k for k, o in zip(_key(spots["hkl"]), on) if o and k in b]
    xs, ys = np.array([a[k] for k in keep]), np.array([b[k] for k in keep])
    strong = (xs > STRONG) | (ys > STRONG)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.abs(xs - ys) / np.maximum(xs, ys)
    return {"max_abs": float(np.abs(xs - ys).max()), "n_common": len(common),
            "max_rel_strong": float(relative[strong].max()) if strong.any() else 0.0,
            "n_strong": int(strong.sum()), "direct": (float(a[(0, 0, 0)]), float(b[(0, 0, 0)])),
            "captured": (float(spots["captured"]), float(other["captured"])),
            "sum_abs_all": float(np.abs(x - y).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tags", nargs="*", default=[])
    parser.add_argument("--base-tag", default=None, help="the default-setting spots to compare the tags with")
    parser.add_argument("--sign-cases", type=int, default=8, help="scored cases in the beam-direction check")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "checks.json")
    args = parser.parse_args()
    record = load_cases(args.data)
    names = [c["name"] for c in record["cases"]]
    by_name = {c["name"]: c for c in record["cases"]}
    spots = load_spots(args.data, names, args.base_tag)
    report: dict = {"positions": {}, "beam_direction": {}, "convergence": {}}

    print("1. positions vs stemkit simulate_kinematic (same hkl, same R), detector pixels of 0.025 1/Å")
    for name in [n for n in names if n in spots]:
        p = report["positions"][name] = positions(by_name[name], spots[name])
        if not by_name[name]["scored"]:
            print(f"  {name:16s} listed: {p['listed_compared']} reflections, max {p['listed_max_px']:.1e} px "
                  f"({p['listed_missing_in_stemkit']} not in stemkit's list); measured on the exit wave: "
                  f"{p['measured']} spots (I {min(p['measured_intensities']):.3f}-{max(p['measured_intensities']):.3f}), "
                  f"max {p['measured_max_px']:.3f} px, median {p['measured_median_px']:.3f} px"
                  f"{'' if not p['measured_failed'] else ', %d without a local peak' % p['measured_failed']}")
    scored = [report["positions"][n] for n in names if n in spots and by_name[n]["scored"]]
    if scored:
        errors = np.concatenate([p["measured_errors_px"] for p in scored])
        bright = np.concatenate([p["measured_bright"] for p in scored]).astype(bool)
        print(f"  {len(scored)} scored cases: listed max {max(p['listed_max_px'] for p in scored):.1e} px "
              f"(missing {sum(p['listed_missing_in_stemkit'] for p in scored)}); measured on the exit wave: "
              f"{bright.sum()} spots >= {VISIBLE} of the beam: median {np.median(errors[bright]):.3f} px, 99th percentile "
              f"{np.percentile(errors[bright], 99):.3f} px, max {errors[bright].max():.3f} px; all {len(errors)}: median "
              f"{np.median(errors):.3f} px, max {errors.max():.3f} px; {sum(p['measured_failed'] for p in scored)} "
              f"without a local peak, {sum(p['measured'] == 0 for p in scored)} cases with no isolated spot")

    print("2. beam direction: abTEM vs stemkit Bloch (generous) for R and C2z·R; spots within ±1.6 1/Å")
    shown = [n for n in names if n in spots and not by_name[n]["scored"]]
    shown += [n for n in names if n in spots and by_name[n]["scored"]][:args.sign_cases]
    for name in [n for n in names if n in spots]:
        b = report["beam_direction"][name] = beam_direction(by_name[name], spots[name])
        if name in shown:
            print(f"  {name:16s} " + "; ".join(f"{k}: max |ΔI| {v['max_abs']:.3f}, Σ|ΔI| {v['sum_abs']:.3f}, "
                                               f"r {v['correlation_strong']:.3f} ({v['n_strong']} strong)"
                                               for k, v in b.items()))
    scored_names = [n for n in names if n in spots and by_name[n]["scored"]]
    if scored_names:
        for label in ("R", "C2z·R", "R, production"):
            worst = np.array([report["beam_direction"][n][label]["max_abs"] for n in scored_names])
            total = np.array([report["beam_direction"][n][label]["sum_abs"] for n in scored_names])
            normalised = np.array([report["beam_direction"][n][label]["max_abs_normalised"] for n in scored_names])
            print(f"  all {len(scored_names)} scored cases, {label:13s}: max |ΔI| per case median {np.median(worst):.3f}, "
                  f"90th percentile {np.percentile(worst, 90):.3f}, largest {worst.max():.3f}; Σ|ΔI| median "
                  f"{np.median(total):.3f}; normalised to the spots' sum, max |ΔI| median {np.median(normalised):.3f}, "
                  f"90th percentile {np.percentile(normalised, 90):.3f}")
        direct = np.array([report["beam_direction"][n]["R, production"]["direct"] for n in scored_names])
        print(f"  direct beam, median over the scored cases: abTEM {np.median(direct[:, 0]):.3f}, stemkit production "
              f"Bloch (absorption {BLOCH_OPTICS.absorption}) {np.median(direct[:, 1]):.3f}")
        better = sum(report["beam_direction"][n]["R"]["sum_abs"] < report["beam_direction"][n]["C2z·R"]["sum_abs"]
                     for n in scored_names)
        print(f"  R closer to abTEM than C2z·R (Σ|ΔI|) in {better} of {len(scored_names)} scored cases")

    print("3. convergence of the abTEM spots (within ±1.6 1/Å; strong: > 0.01 of the beam)")
    for tag in args.tags:
        other = load_spots(args.data, names, tag)
        for name in [n for n in names if n in other and n in spots]:
            c = report["convergence"].setdefault(tag, {})[name] = convergence(spots[name], other[name])
            print(f"  {tag:11s} {name:16s} max |ΔI| {c['max_abs']:.4f}, max rel. (strong) {c['max_rel_strong']:.3f} "
                  f"({c['n_strong']}), direct {c['direct'][0]:.4f}/{c['direct'][1]:.4f}, captured "
                  f"{c['captured'][0]:.3f}/{c['captured'][1]:.3f}")
    args.output.write_text(json.dumps(report, indent=1, default=float))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
