"""Side-by-side tables: stemkit.find_peaks vs py4DSTEM find_Bragg_disks against the simulator's truth.

For every data file (family x dose) prints one markdown table: recall of the reflections
above 5 sigma per pixel, false positives per pattern, position RMS error (px) for SNR >= 5
and >= 10, the direct beam's error, peaks per pattern and patterns per second, for stemkit
and py4DSTEM (subpixel 'poly' and 'multicorr'), with the ratios stemkit / py4DSTEM
(throughput: > 1 is stemkit faster; errors and false positives: < 1 is stemkit better).
Each throughput is the method's fastest variant (py4DSTEM: 1 or 2 worker processes, 1 or
default OpenBLAS threads; stemkit: 1 or 2 torch threads); accuracy does not depend on the
variant (checked: a warning is printed otherwise). The one-core row (stemkit with one torch
thread, py4DSTEM in one process with one BLAS thread) is the per-core efficiency, the figure
least disturbed by other jobs on a shared machine. The scoring rule
is in ``matching.py``; each table also gives the shot-noise bound on the position RMS
(``crb.py``). A last table checks the issue's targets, and, when present, one
more gives py4DSTEM with each file's own best threshold (the "oracle", an upper bound).

Run: ``.venv/bin/python benchmarks/find_peaks/compare.py [--results DIR]``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crb import position_bound
from matching import SNR_CLASSES, Scores, Truth, score

HERE = Path(__file__).resolve().parent
TARGET_RECALL, TARGET_RMS, TARGET_FP, TARGET_SPEEDUP = 0.99, 0.1, 1.0, 5.0
MODERATE_DOSE = 2e5


@dataclass
class Method:
    """One method's peaks and timings on one data file."""

    label: str
    scores: Scores
    rate: float  # patterns per second: the fastest variant's best measurement (timing.py)
    variant: str
    rates: dict[str, float]  # every variant's best rate

    @property
    def single_core(self) -> float:
        """Rate on one core: stemkit with 1 torch thread, py4DSTEM in 1 process with 1 BLAS thread."""
        return next((r for v, r in self.rates.items() if v.endswith(("-t1", "-w1-blas1"))), float("nan"))


def load_method(results: Path, prefix: str, stem: str, truth: Truth) -> Method | None:
    """Score the peaks of ``prefix`` (any variant) on ``stem``; the rate of its fastest variant."""
    files = sorted(results.glob(f"{prefix}-w*_{stem}.npz")) + sorted(results.glob(f"{prefix}-t*_{stem}.npz"))
    if not files:
        return None
    rates, scores = {}, []
    for path in files:
        with np.load(path) as f:
            rates[path.name.split("_")[0]] = int(f["n_patterns"]) / float(f["seconds"].min())
            scores.append(score(f["row"], f["col"], truth))
    recalls = {round(s.recall, 6) for s in scores}
    if len(recalls) > 1:
        print(f"warning: {prefix} variants disagree on {stem}: recall {sorted(recalls)}")
    variant = max(rates, key=rates.get)
    return Method(prefix, scores[0], rates[variant], variant, rates)


def ratio(a: float, b: float) -> str:
    """``a / b`` formatted, or a dash."""
    return f"{a / b:.2f}" if np.isfinite(a) and np.isfinite(b) and b != 0 else "–"


def rows_of(m: Method) -> list[float]:
    """The table's numbers for one method, in row order."""
    s = m.scores
    return [s.recall, s.false_positives, *(s.rms[level] for level in SNR_CLASSES), s.beam_rms, s.peaks_per_pattern, m.rate,
            m.single_core]


ROW_NAMES = ["recall, SNR ≥ 5", "false positives / pattern", *(f"position RMS, SNR ≥ {level:g} (px)" for level in SNR_CLASSES),
             "direct beam RMS (px)", "peaks / pattern", "patterns / s (fastest variant)", "patterns / s on one core"]
FORMATS = ["{:.4f}", "{:.3f}", "{:.3f}", "{:.3f}", "{:.4f}", "{:.1f}", "{:.0f}", "{:.0f}"]


def table(stem: str, truth: Truth, stemkit: Method, peers: list[Method], bound: dict[float, float]) -> str:
    """One markdown table: stemkit, then each py4DSTEM variant with the ratio stemkit / it."""
    n = truth.row.shape[0]
    s = stemkit.scores
    head = f"**{stem}**: {n} patterns, {s.n_recall} reflections with SNR ≥ 5 ({s.n_recall / n:.1f} per pattern)"
    columns = ["stemkit"] + [x for p in peers for x in (p.label.replace("py4dstem-", "py4DSTEM "), "ratio")]
    lines = [head, "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    ours = rows_of(stemkit)
    theirs = [rows_of(p) for p in peers]
    for i, (name, fmt) in enumerate(zip(ROW_NAMES, FORMATS)):
        cells = [fmt.format(ours[i])]
        for values in theirs:
            cells += [fmt.format(values[i]), ratio(ours[i], values[i])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("fastest variants: " + ", ".join(p.variant for p in [stemkit, *peers]))
    lines.append("shot-noise (Cramér–Rao) bound on the position RMS (`crb.py`): "
                 + ", ".join(f"SNR ≥ {level:g}: {bound[level]:.3f} px" for level in SNR_CLASSES))
    return "\n".join(lines)


def targets(summary: list[tuple[str, float, Method, list[Method], dict[float, float]]]) -> str:
    """The issue's targets per file: recall, RMS at moderate dose (and its shot-noise bound), FP, and the
    speed-up at equal or better accuracy."""
    lines = ["| data | recall ≥ 0.99 | RMS ≤ 0.1 px (SNR ≥ 5 / ≥ 10) | bound (SNR ≥ 5 / ≥ 10) | FP ≤ 1 | speed-up vs py4DSTEM poly / multicorr (≥ 5×) | stemkit as accurate? (poly / multicorr) |",
             "|---|---|---|---|---|---|---|"]
    for stem, dose, ours, peers, bound in summary:
        s = ours.scores
        rms = f"{s.rms[5.0]:.3f} / {s.rms[10.0]:.3f}" + ("" if dose == MODERATE_DOSE else " (not the target dose)")
        speed = " / ".join(f"{ours.rate / p.rate:.2f}×" for p in peers)
        accurate = " / ".join(_as_accurate(s, p.scores) for p in peers)
        lines.append(f"| {stem} | {s.recall:.4f} {'✓' if s.recall >= TARGET_RECALL else '✗'} | {rms} "
                     f"{_rms_verdict(s.rms, bound)} | {bound[5.0]:.3f} / {bound[10.0]:.3f} | "
                     f"{s.false_positives:.3f} {'✓' if s.false_positives <= TARGET_FP else '✗'} | {speed} | {accurate} |")
    return "\n".join(lines)


def _rms_verdict(rms: dict[float, float], bound: dict[float, float]) -> str:
    """✓ where both SNR classes meet the RMS target; ✗ otherwise, saying which classes no unbiased
    estimator could bring to the target (their shot-noise bound is above it)."""
    if all(rms[level] <= TARGET_RMS for level in SNR_CLASSES):
        return "✓"
    impossible = [f"SNR ≥ {level:g}" for level in SNR_CLASSES if rms[level] > TARGET_RMS and bound[level] > TARGET_RMS]
    return "✗" + (f" ({', '.join(impossible)}: bound above the target)" if impossible else "")


def _as_accurate(ours: Scores, theirs: Scores) -> str:
    """'yes' when stemkit's recall, false positives and RMS errors are all at least as good.

    "As good" allows the scatter of these samples: recall within 0.001, false positives within
    0.05 per pattern, RMS within 2 % (thousands of reflections: ~1-2 % statistical spread).
    """
    worse = []
    if ours.recall < theirs.recall - 0.001:
        worse.append("recall")
    if ours.false_positives > theirs.false_positives + 0.05:
        worse.append("FP")
    if any(ours.rms[k] > 1.02 * theirs.rms[k] for k in SNR_CLASSES):
        worse.append("RMS")
    return "yes" if not worse else "no (" + ", ".join(worse) + ")"


def oracle_table(rows: list[tuple[str, Method, Method]]) -> str:
    """stemkit vs py4DSTEM poly with each file's own threshold."""
    lines = ["| data | recall (stemkit / py4DSTEM) | FP per pattern | RMS SNR ≥ 5 (px) | RMS SNR ≥ 10 (px) |", "|---|---|---|---|---|"]
    for stem, ours, oracle in rows:
        a, b = ours.scores, oracle.scores
        lines.append(f"| {stem} | {a.recall:.4f} / {b.recall:.4f} | {a.false_positives:.3f} / {b.false_positives:.3f} | "
                     f"{a.rms[5.0]:.3f} / {b.rms[5.0]:.3f} | {a.rms[10.0]:.3f} / {b.rms[10.0]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    summary, oracles = [], []
    files = sorted(args.data.glob("*_dose*.npz"), key=lambda p: (p.name.split("_")[0], float(p.stem.split("dose")[1])))
    for path in files:
        truth = Truth.load(path)
        ours = load_method(args.results, "stemkit", path.stem, truth)
        peers = [m for m in (load_method(args.results, f"py4dstem-{sub}", path.stem, truth) for sub in ("poly", "multicorr")) if m]
        if ours is None or not peers:
            print(f"{path.stem}: results missing, skipped")
            continue
        bound = position_bound(path)
        print(table(path.stem, truth, ours, peers, bound) + "\n")
        summary.append((path.stem, float(path.stem.split("dose")[1]), ours, peers, bound))
        oracle = load_method(args.results, "py4dstem-poly-oracle", path.stem, truth)
        if oracle:
            oracles.append((path.stem, ours, oracle))
    print("**Targets** (stemkit; speed-ups against py4DSTEM's fastest variant of each subpixel mode)\n")
    print(targets(summary) + "\n")
    if oracles:
        print("**py4DSTEM poly with each file's own best threshold** (oracle: chosen with the ground truth)\n")
        print(oracle_table(oracles) + "\n")
    load = args.results / "load.txt"
    if load.exists():
        print("Machine load: " + "; ".join(load.read_text().split("\n")).strip("; "))
    stemkit_file = next(args.results.glob("stemkit-t*.npz"), None)
    if stemkit_file:
        with np.load(stemkit_file) as f:
            print("stemkit: " + str(f["params"]))
    params = args.results / "py4dstem_params.json"
    if params.exists():
        print("py4DSTEM parameters: " + json.dumps(json.loads(params.read_text())["families"]))


if __name__ == "__main__":
    main()
