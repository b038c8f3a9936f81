"""Tune py4DSTEM's find_Bragg_disks: the best recall at <= 1 false positive per pattern, once per family.

Runs in the py4DSTEM venv. On one data file per family (the 2e5-electron dose, the first
``--limit`` patterns) every combination of kernel (flat, or the tutorials' sigmoid trench
with outer radius 2 r or 4 r), correlation power, smoothing of the correlation (``sigma``)
and peak spacing runs once with no intensity threshold and ``subpixel="pixel"``, so each
peak's intensity is exactly the value py4DSTEM's threshold filter compares. The
thresholds are then swept afterwards: py4DSTEM filters by intensity before its spacing
rule, which only ever removes a peak in favour of a stronger one, so a threshold keeps
exactly the strongest peaks of the unthresholded run. Each peak is scored once,
strongest first (true if it lands within the tolerance of a real, unclaimed reflection),
and cumulative sums give recall and false positives for every threshold, relative
(``minRelativeIntensity``) and absolute (``minAbsoluteIntensity``).

Choice, per threshold kind: the thresholds within 0.001 of the best recall (SNR >= 5)
at <= 1 false positive per pattern form a plateau; its geometric middle is taken (the
most margin for other doses). The best ``--finalists`` settings by recall and plateau
width are then run with ``subpixel="poly"``, and the winner is the highest recall, then
the smallest position error (SNR >= 5). These parameters are then kept fixed for all
doses of the family. With ``--oracle``, the winner's threshold is also re-chosen for
every data file on its own (an upper bound for py4DSTEM that needs the ground truth).

Writes ``results/py4dstem_params.json``.

Run: ``.peers/py4dstem/bin/python benchmarks/find_peaks/tune_py4dstem.py [--oracle]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402

from matching import SNR_RECALL, Truth, score  # noqa: E402
from run_py4dstem import HERE, MAX_PEAKS, PARAMS_FILE, find, finder_kwargs, make_kernel  # noqa: E402

KERNEL_RADII = {"flat": None, "sigmoid(r,2r)": (1.0, 2.0), "sigmoid(r,4r)": (1.0, 4.0)}
CORR_POWERS = (1.0, 0.8, 0.6)
SIGMAS = (0.0, 1.0, 2.0)
SPACINGS = (2.0, 4.0)  # in probe radii
MAX_FP = 1.0
RECALL_SLACK = 0.001
TUNING_DOSE = "2e+05"


@dataclass
class Choice:
    """A threshold chosen on a plateau, with what it gives."""

    kind: str
    threshold: float
    recall: float
    false_positives: float
    plateau: tuple[float, float]

    @property
    def width(self) -> float:
        """Plateau width in decades."""
        return float(np.log10(self.plateau[1] / self.plateau[0])) if self.plateau[0] > 0 else 0.0


def load(path: Path, limit: int) -> tuple[np.ndarray, np.ndarray, Truth]:
    """Patterns (float64), probe and truth of the first ``limit`` patterns."""
    with np.load(path) as f:
        patterns, probe = f["patterns"][:limit].astype(np.float64), f["probe"]
    t = Truth.load(path)
    truth = Truth(*(a[:limit] for a in (t.row, t.col, t.counts, t.background, t.snr)), t.radius_px, t.shape)
    return patterns, probe, truth


def peak_outcomes(found: np.ndarray, truth: Truth) -> tuple[np.ndarray, np.ndarray]:
    """Per found peak (strongest first): true?, and whether it is the first to find a recall-set reflection."""
    real, recall_set = truth.real(), truth.scored() & (np.nan_to_num(truth.snr) >= SNR_RECALL)
    n, k = found.shape[:2]
    true = np.zeros((n, k), dtype=bool)
    finds = np.zeros((n, k), dtype=bool)
    for i in range(n):
        claimed = np.zeros(truth.row.shape[1], dtype=bool)
        for j in range(k):
            if not np.isfinite(found[i, j, 0]):
                break
            d = np.hypot(truth.row[i] - found[i, j, 0], truth.col[i] - found[i, j, 1])
            d = np.where(real[i] & ~claimed, d, np.inf)
            t = int(np.argmin(d))
            if d[t] <= truth.tolerance:
                claimed[t], true[i, j], finds[i, j] = True, True, recall_set[i, t]
    return true, finds


def sweep(values, true, finds, n_recall: int, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and false positives per pattern for each threshold (a peak is kept if its value >= threshold).

    Patterns that filled all ``MAX_PEAKS`` slots lost their weakest maxima: thresholds at or below
    their weakest kept peak cannot be judged and get infinite false positives.
    """
    ok = np.isfinite(values)
    order = np.argsort(-values[ok])
    v, t, f = values[ok][order], true[ok][order], finds[ok][order]
    kept = np.searchsorted(-v, -thresholds, side="right")
    fp = np.r_[0, np.cumsum(~t)][kept] / values.shape[0]
    full = np.isfinite(values[:, -1])
    if full.any():
        fp = np.where(thresholds > values[full, -1].max(), fp, np.inf)
    return np.r_[0, np.cumsum(f)][kept] / n_recall, fp


def choose(kind: str, thresholds: np.ndarray, recall: np.ndarray, fp: np.ndarray) -> Choice:
    """The geometric middle of the plateau of near-best recall at <= MAX_FP false positives per pattern."""
    ok = fp <= MAX_FP
    if not ok.any():
        return Choice(kind, float("nan"), 0.0, float("nan"), (float("nan"), float("nan")))
    plateau = np.flatnonzero(ok & (recall >= recall[ok].max() - RECALL_SLACK))
    lo, hi = thresholds[plateau[0]], thresholds[plateau[-1]]
    i = plateau[np.argmin(np.abs(np.log(thresholds[plateau]) - 0.5 * np.log(lo * hi)))]
    return Choice(kind, float(thresholds[i]), float(recall[i]), float(fp[i]), (float(lo), float(hi)))


def threshold_choices(found: np.ndarray, truth: Truth) -> dict[str, Choice]:
    """Best relative and absolute thresholds for one unthresholded run."""
    n_recall = int((truth.scored() & (np.nan_to_num(truth.snr) >= SNR_RECALL)).sum())
    true, finds = peak_outcomes(found, truth)
    intensity = found[..., 2]
    relative = intensity / intensity[:, :1]
    grid_rel = np.logspace(-7, 0, 351)
    positive = intensity[np.isfinite(intensity) & (intensity > 0)]
    grid_abs = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 351)
    return {
        "relative": choose("relative", grid_rel, *sweep(relative, true, finds, n_recall, grid_rel)),
        "absolute": choose("absolute", grid_abs, *sweep(intensity, true, finds, n_recall, grid_abs)),
    }


def grid_search(patterns, probe, truth) -> list[tuple[dict, Choice]]:
    """Every setting of the grid with its best threshold of each kind."""
    rows = []
    for (name, radii), power, sigma, spacing in itertools.product(KERNEL_RADII.items(), CORR_POWERS, SIGMAS, SPACINGS):
        setting = {"kernel_radii": radii, "corrPower": power, "sigma": sigma, "minPeakSpacing": spacing}
        kernel, radius = make_kernel(probe, setting)
        found = find(patterns, kernel, finder_kwargs(setting, radius, "pixel", 16))
        choices = threshold_choices(found, truth)
        full = np.mean(np.isfinite(found[:, -1, 0]))
        for choice in choices.values():
            rows.append((setting, choice))
        print(f"  {name:13s} corrPower {power:.1f} sigma {sigma:.0f} spacing {spacing:.0f}r | "
              + " | ".join(f"{c.kind} {c.threshold:.3g} [{c.plateau[0]:.2g}, {c.plateau[1]:.2g}]: recall {c.recall:.4f} "
                           f"FP {c.false_positives:.2f}" for c in choices.values())
              + (f" | {100 * full:.0f}% of patterns at {MAX_PEAKS} peaks" if full else ""), flush=True)
    return rows


def finalist_scores(rows, patterns, probe, truth, count: int) -> list[tuple[dict, Choice, object]]:
    """Run the best ``count`` settings (recall, then plateau width) with subpixel='poly' and score them."""
    ranked = sorted(rows, key=lambda r: (round(r[1].recall, 3), r[1].width), reverse=True)[:count]
    out = []
    for setting, choice in ranked:
        params = setting | {"threshold_type": choice.kind, "threshold": choice.threshold}
        kernel, radius = make_kernel(probe, params)
        found = find(patterns, kernel, finder_kwargs(params, radius, "poly", 16))
        s = score(found[..., 0], found[..., 1], truth)
        out.append((params, choice, s))
        print(f"  {params}: recall {s.recall:.4f}, FP {s.false_positives:.2f}, "
              f"RMS {s.rms[5.0]:.3f} / {s.rms[10.0]:.3f} px (SNR >= 5 / 10); plateau {choice.width:.2f} decades", flush=True)
    return out


def tune_family(path: Path, limit: int, finalists: int) -> dict:
    """The fixed parameters of one family, tuned on one file."""
    patterns, probe, truth = load(path, limit)
    print(f"tuning on {path.name}: {len(patterns)} patterns", flush=True)
    rows = grid_search(patterns, probe, truth)
    print("finalists with subpixel='poly':")
    scored = finalist_scores(rows, patterns, probe, truth, finalists)
    params, choice, s = max(scored, key=lambda r: (round(r[2].recall, 3), -r[2].rms[5.0]))
    print(f"chosen for {path.name}: {params}", flush=True)
    return params | {"tuned_on": path.stem, "tuning_patterns": len(patterns), "plateau": choice.plateau,
                     "tuning_recall": s.recall, "tuning_fp": s.false_positives, "tuning_rms5": s.rms[5.0]}


def oracle_threshold(path: Path, params: dict, limit: int) -> float:
    """The threshold of ``params``' kind re-chosen on this file alone."""
    patterns, probe, truth = load(path, limit)
    setting = {k: params[k] for k in ("kernel_radii", "corrPower", "sigma", "minPeakSpacing")}
    kernel, radius = make_kernel(probe, setting)
    choice = threshold_choices(find(patterns, kernel, finder_kwargs(setting, radius, "pixel", 16)), truth)[params["threshold_type"]]
    print(f"oracle {path.stem}: {choice.kind} {choice.threshold:.3g} (plateau {choice.plateau[0]:.2g}..{choice.plateau[1]:.2g}), "
          f"recall {choice.recall:.4f}, FP {choice.false_positives:.2f}", flush=True)
    return choice.threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=PARAMS_FILE)
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--finalists", type=int, default=8)
    parser.add_argument("--oracle", action="store_true", help="also choose each file's own threshold")
    args = parser.parse_args()
    families = sorted({p.name.split("_dose")[0] for p in args.data.glob("*_dose*.npz")})
    tuned = {"families": {f: tune_family(args.data / f"{f}_dose{TUNING_DOSE}.npz", args.limit, args.finalists) for f in families}}
    if args.oracle:
        tuned["oracle"] = {p.stem: oracle_threshold(p, tuned["families"][p.name.split("_dose")[0]], args.limit)
                           for p in sorted(args.data.glob("*_dose*.npz"))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(tuned, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
