"""Turn a training run into shippable weights: calibrate the confidence, measure, save, write the model card.

``python -m stemkit.orientation.publish --checkpoint .runs/cu-cu2o --output stemkit/pretrained/cu-cu2o``

Every figure in the card is measured here, on data simulated with fixed seeds, and the
card says how: the raw model and the refined answers on the training distribution at
300 keV, and the whole pipeline (find_peaks, model, refinement) on a rendered Cu/Cu2O
polycrystal. Nothing in the card is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch

from stemkit.orientation.confidence import calibrate
from stemkit.orientation.decode import Decoded
from stemkit.orientation.evaluation import load_mapper, on_polycrystal, on_validation_set
from stemkit.orientation.mapper import OrientationMapper
from stemkit.orientation.metrics import orientation_metrics
from stemkit.orientation.simulate import simulate_seen_peaks

CARD_FILE = "README.md"
# the thick, dynamical test specimen of the card: Bloch-wave patterns of 15-60 nm grains, many orientations
THICK_DYNAMICAL = {"diffraction": "bloch", "thickness_nm": (15.0, 60.0), "n_grains": 64, "seed": 5}


def refined_on_simulation(mapper: OrientationMapper, n: int = 2048, seed: int = 11,
                          beam_energy_kev: float = 300.0) -> dict[str, float]:
    """Accuracy of the refined answers on ``n`` patterns drawn like the training data at one energy."""
    conditions, seen = simulate_seen_peaks(mapper.crystals_, n, seed, mapper.training_augmentation(), beam_energy_kev)
    start = time.perf_counter()
    answers = mapper.answer_arrays(seen.kx, seen.ky, seen.counts, seen.valid, beam_energy_kev=beam_energy_kev,
                                   beam_radius=seen.probe_radius, refine=True)
    seconds = time.perf_counter() - start
    decoded = Decoded(**{name: answers[name] for name in Decoded.__dataclass_fields__})
    metrics = orientation_metrics(decoded, conditions.rotations, conditions.phase,
                                  [c.point_group for c in mapper.crystals_])
    return metrics | {"patterns_per_s": n / seconds}


def measure(mapper: OrientationMapper, *, size: int = 4096, scan: int = 32) -> dict[str, Any]:
    """Every figure of the card: ``size`` simulated patterns per set, a ``scan`` × ``scan`` polycrystal."""
    figures: dict[str, Any] = {"calibration": calibrate(mapper, n=size)}
    figures["raw_model_on_validation_set"] = on_validation_set(mapper, size=size)
    figures["refined_on_simulation_300kev"] = refined_on_simulation(mapper, n=size // 2)
    figures["polycrystal_end_to_end"] = on_polycrystal(mapper, scan_shape=(scan, scan))
    figures["polycrystal_thick_bloch"] = on_polycrystal(mapper, scan_shape=(scan, scan), **THICK_DYNAMICAL)
    return figures


def card_text(name: str, mapper: OrientationMapper, figures: dict[str, Any], command: str, note: str = "") -> str:
    """The model card (Markdown)."""
    record = mapper.training_record_ or {}
    lines = [
        f"# {name}: stemkit orientation transformer", "",
        f"Phases: {', '.join(c.name for c in mapper.crystals_)}. Weights: `model.safetensors` "
        f"(SHA-256 `{mapper.weights_sha256_}`), read without unpickling by `OrientationMapper.pretrained({name!r})`.",
        "", "## How it was made", "",
        f"- Architecture: {json.dumps(mapper.model_.config.to_dict())}",
        f"- Training data: simulated on the fly by `stemkit.orientation.simulate` (kinematic spots, and for a share "
        f"`bloch_fraction` of the patterns dynamical Bloch-wave spots; orientations uniform over each phase's "
        f"fundamental zone, degraded as `find_peaks` sees them): "
        f"`{json.dumps(mapper.training_augmentation().to_dict())}`",
        f"- Steps: {record.get('steps')}; recipe: `{json.dumps(record.get('training_config'))}`",
        f"- Training command: `{record.get('command', 'python -m stemkit.orientation.train --phases Cu Cu2O ...')}`",
        f"- Published with: `{command}` on {date.today().isoformat()}, {platform.machine()} CPU, "
        f"torch {torch.__version__}.",
        *([f"- Provenance: {note}"] if note else []),
        "", "## How well it does (measured by the command above)", "",
        "Fields: median disorientation (°), % within 5°, % within 5° counting a correctly flagged ambiguity, "
        "% where either hypothesis is within 5°, % flagged ambiguous, % right phase.", "",
    ]
    for key, values in figures.items():
        if key == "calibration":
            continue
        # Speeds are left out: they depend on the machine's load; benchmarks/ measures them side by side.
        lines.append(f"- **{key}**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items() if "per_s" not in k))
    calibration = figures["calibration"]
    lines += ["", "## Confidence calibration (held-out simulated patterns and scan rows)", "",
              f"Fitted on {calibration['n_fit']} answers: single simulated patterns and simulated scans of grains "
              f"mapped as `predict` maps them (neighbours' offers included); checked on held-out ones."]
    for label in ("single patterns", "scans"):
        check = calibration[label]
        lines += ["", f"{label.capitalize()} ({check['n_check']}): share right (within 5°, right phase) "
                  f"{check['share_right']:.3f}; Brier score {check['brier']:.3f}.", "",
                  "| mean confidence | share right | patterns |", "|---|---|---|"]
        lines += [f"| {p:.2f} | {r:.2f} | {c} |" for p, r, c in check["reliability"]]
    lines += ["", "## Limits", "",
              "- Dynamical intensities come from stemkit's Bloch-wave simulator (proportional absorption, no "
              "diffuse scattering); `polycrystal_thick_bloch` measures the model on such patterns of 15-60 nm grains "
              "(64 grains; `diffraction='bloch'`); nothing else here was measured on real or multislice data.",
              "- Where a pattern's bright disks lie in one zone, the 180°-about-the-beam twin, slightly tilted, excites "
              "them as the answer does, and the score picks the wrong one of the two for a fifth to a third of such "
              "patterns (stemkit.orientation.zones): these are flagged `ambiguous`, the twin their `alternative`, once "
              "the twin scores 0.7 of the answer: in thin foils about half of the patterns (the `ambiguous` figures "
              "above). Elsewhere the twin can still outscore the right answer; `confidence` says where the answer is "
              "unsure.",
              "- See benchmarks/RESULTS.md for the comparison with py4DSTEM and pyxem.", ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stemkit.orientation.publish``."""
    parser = argparse.ArgumentParser(prog="python -m stemkit.orientation.publish", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (folder or .pt)")
    parser.add_argument("--output", type=Path, required=True, help="weights folder to write (must not exist)")
    parser.add_argument("--name", default=None, help="the weights' name (default: the output folder's name)")
    parser.add_argument("--patterns", type=int, default=4096, help="simulated patterns per measurement set")
    parser.add_argument("--scan", type=int, default=32, help="side of the rendered polycrystal scan")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--note", default="", help="a provenance line for the card (e.g. how the run was resumed)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.output.exists():
        parser.error(f"{args.output} exists; choose a new folder or remove it first (nothing is overwritten)")
    mapper = load_mapper(args.checkpoint)
    figures = measure(mapper, size=args.patterns, scan=args.scan)
    mapper.save(args.output)
    command = "python -m stemkit.orientation.publish " + shlex.join(argv if argv is not None else sys.argv[1:])
    name = args.name or args.output.name
    (args.output / CARD_FILE).write_text(card_text(name, mapper, figures, command.strip(), args.note))
    (args.output / "figures.json").write_text(json.dumps(figures, indent=1, default=float))
    print((args.output / CARD_FILE).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
