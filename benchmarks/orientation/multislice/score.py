"""Score orientation weights on the multislice test set (issue 11), with stemkit's Bloch waves on the same cases.

For the scored cases whose abTEM spot lists exist (``data/spots/``), three sets of patterns are made with
identical orientations, phases and thicknesses, through one detector path:

- ``multislice``: abTEM's spot lists (abtem_side.py);
- ``bloch``: stemkit's ``simulate_bloch`` as the thick polycrystal of benchmarks/orientation/dynamical.py uses it
  (``spot_patterns`` with ``Optics(diffraction="bloch")``: 128 beams, absorption 0.05, k_max = detector corner);
- ``kinematic``: stemkit's kinematic spots (``spot_patterns``, electrons conserved), for reference.

Each spot table is drawn as disks (1 mrad probe at 300 keV), blurred, mixed with a 5 % Lorentzian background
on a 128 x 128 detector of 0.025 1/Å pixels (stemkit.physics.specimens._grain_image, the polycrystal's own
renderer) and given Poisson noise at 1e5 electrons per pattern (``noisy_cube``, the polycrystal's; one seed for
all three sets). Peaks by ``stemkit.find_peaks`` (defaults), answers by ``OrientationMapper.predict`` (refined),
figures by ``stemkit.orientation.metrics.orientation_metrics`` as dynamical.py reports them.

Usage: .venv/bin/python benchmarks/orientation/multislice/score.py WEIGHTS [WEIGHTS ...] [--labels A B ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BLOCH_OPTICS, DATA, DOSE, OPTICS, crystal_of, load_cases, load_spots, padded_tables  # noqa: E402

import stemkit  # noqa: E402
from stemkit.data.datacube import datacube  # noqa: E402
from stemkit.orientation.evaluation import _as_decoded, load_mapper  # noqa: E402
from stemkit.orientation.metrics import disorientation_deg, orientation_metrics  # noqa: E402
from stemkit.physics.specimens import _grain_image, noisy_cube, spot_patterns  # noqa: E402
from stemkit.preprocess import find_peaks  # noqa: E402

FIELDS = ("median_deg", "within_5deg", "within_5deg_or_flagged", "best_hypothesis_within_5deg", "ambiguous",
          "phase_accuracy", "median_disks")
NOISE_SEED = 11
SETS = ("multislice", "bloch", "kinematic")


def spot_tables(cases: list[dict], spots: dict[str, dict], which: str) -> list[tuple[np.ndarray, ...]]:
    """One (kx, ky, fraction) table per case, direct beam first."""
    if which == "multislice":
        return [(spots[c["name"]]["kx"], spots[c["name"]]["ky"], spots[c["name"]]["intensity"]) for c in cases]
    optics = BLOCH_OPTICS if which == "bloch" else OPTICS
    tables: list[tuple[np.ndarray, ...] | None] = [None] * len(cases)
    for phase in sorted({c["phase"] for c in cases}):
        members = [i for i, c in enumerate(cases) if c["phase"] == phase]
        rotations = np.array([cases[i]["rotation"] for i in members])
        thickness = np.array([cases[i]["thickness_nm"] for i in members])
        kx, ky, fraction = spot_patterns(crystal_of(phase), rotations, thickness, optics)
        for row, i in enumerate(members):
            tables[i] = (kx[row], ky[row], fraction[row])
    return tables  # type: ignore[return-value]


def render(tables: list[tuple[np.ndarray, ...]], noise_seed: int = NOISE_SEED):
    """The tables as one scan row of noisy 128 x 128 patterns (the polycrystal's detector path)."""
    kx, ky, fraction = padded_tables(tables)
    patterns = _grain_image(kx, ky, fraction, OPTICS)
    labels = np.arange(len(tables))[None, :]
    intensity = noisy_cube(patterns, labels, OPTICS, dose=DOSE, seed=noise_seed, lazy=False)
    return datacube(intensity, scan_step_nm=2.0, k_step=OPTICS.k_step, beam_energy_kev=OPTICS.beam_energy_kev,
                    attrs={"convergence_mrad": OPTICS.convergence_mrad, "dose_electrons": DOSE,
                           "source": "benchmarks/orientation/multislice/score.py"})


def score(mapper, peaks, cases: list[dict]) -> dict:
    result = mapper.predict(peaks, progress=False)
    names = [c.name for c in mapper.crystals_]
    truth_phase = np.array([names.index(c["phase"]) for c in cases])
    truth = np.array([c["rotation"] for c in cases])
    groups = [c.point_group for c in mapper.crystals_]
    decoded = _as_decoded(result, names)
    metrics = orientation_metrics(decoded, truth, truth_phase, groups)
    error = disorientation_deg(decoded.rotation, truth, truth_phase, groups)
    return metrics | {"median_disks": float(np.median(result["n_peaks"].values)),
                      "no_disk": float(100.0 * np.mean(result["n_peaks"].values == 0)),
                      "per_case_deg": error.tolist(), "per_case_phase_right": (decoded.phase == truth_phase).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="*", default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tag", default=None, help="read spots-TAG/ instead of spots/ (another abTEM setting)")
    parser.add_argument("--restrict-to", default=None, metavar="TAG",
                        help="score only the cases that spots-TAG/ holds (to compare two settings on one subset)")
    parser.add_argument("--noise-seed", type=int, default=NOISE_SEED, help="seed of the Poisson noise")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results.json")
    args = parser.parse_args()
    labels = args.labels or [str(w) for w in args.weights]
    torch.set_num_threads(args.threads)
    record = load_cases(args.data)
    scored = [c for c in record["cases"] if c["scored"]]
    spots = load_spots(args.data, [c["name"] for c in scored], args.tag)
    cases = [c for c in scored if c["name"] in spots]
    if args.restrict_to is not None:
        subset = load_spots(args.data, [c["name"] for c in cases], args.restrict_to)
        cases = [c for c in cases if c["name"] in subset]
    counts = {p: sum(c["phase"] == p for c in cases) for p in ("Cu", "Cu2O")}
    thickness = np.array([c["thickness_nm"] for c in cases])
    print(f"{len(cases)} of {len(scored)} scored cases simulated by abTEM ({counts}; thickness "
          f"{thickness.min():.1f}-{thickness.max():.1f} nm, median {np.median(thickness):.1f}); stemkit from "
          f"{Path(stemkit.__file__).parent}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    results = {"spots": "spots" if args.tag is None else f"spots-{args.tag}", "date": date.today().isoformat(),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} torch "
               "thread(s)", "stemkit": str(Path(stemkit.__file__).parent), "commit": commit,
               "n_cases": len(cases), "n_planned": len(scored), "phases": counts,
               "thickness_nm": [float(thickness.min()), float(thickness.max()), float(np.median(thickness))],
               "noise_seed": args.noise_seed, "dose": DOSE, "optics": OPTICS.__dict__, "sets": {}, "models": {}}
    peaks = {}
    for which in SETS:
        start = time.perf_counter()
        tables = spot_tables(cases, spots, which)
        cube = render(tables, args.noise_seed)
        peaks[which] = find_peaks(cube)
        n_found = (peaks[which]["valid"].values.sum(axis=-1))
        results["sets"][which] = {"seconds": time.perf_counter() - start,
                                  "median_peaks_found": float(np.median(n_found)),
                                  "median_listed_spots_above_1e-3": float(np.median([np.sum(t[2][1:] > 1e-3)
                                                                                    for t in tables])),
                                  "median_direct_beam": float(np.median([t[2][0] for t in tables]))}
        print(f"set {which:10s}: rendered and peaks found in {results['sets'][which]['seconds']:.1f} s; median "
              f"{results['sets'][which]['median_peaks_found']:.0f} peaks found, "
              f"{results['sets'][which]['median_listed_spots_above_1e-3']:.0f} listed spots > 1e-3, direct beam "
              f"{results['sets'][which]['median_direct_beam']:.3f}", flush=True)
    print(f"{'weights':44s} {'set':10s} " + " ".join(f"{f[:14]:>14s}" for f in FIELDS))
    for label, folder in zip(labels, args.weights):
        mapper = load_mapper(folder)
        entry = results["models"][label] = {"path": str(folder), "sha256": mapper.weights_sha256_}
        for which in SETS:
            figures = score(mapper, peaks[which], cases)
            entry[which] = figures
            print(f"{label[:44]:44s} {which:10s} " + " ".join(f"{figures[f]:14.2f}" for f in FIELDS), flush=True)
    if len(labels) == 2:  # paired: the same patterns, before and after
        first, second = (results["models"][label] for label in labels)
        print(f"paired, within 5° ({labels[0][:20]} -> {labels[1][:20]}):")
        for which in SETS:
            a, b = (np.array(m[which]["per_case_deg"]) <= 5.0 for m in (first, second))
            pa, pb = (np.array(m[which]["per_case_phase_right"]) for m in (first, second))
            results.setdefault("paired", {})[which] = {"both": int(np.sum(a & b)), "only_first": int(np.sum(a & ~b)),
                                                       "only_second": int(np.sum(~a & b)),
                                                       "neither": int(np.sum(~a & ~b)),
                                                       "phase_only_first": int(np.sum(pa & ~pb)),
                                                       "phase_only_second": int(np.sum(~pa & pb))}
            p = results["paired"][which]
            print(f"  {which:10s} both {p['both']}, only before {p['only_first']}, only after {p['only_second']}, "
                  f"neither {p['neither']}; phase right only before {p['phase_only_first']}, only after "
                  f"{p['phase_only_second']}")
    args.output.write_text(json.dumps(results, indent=1, default=float))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
