"""Evaluating a mapper: on the fixed simulated validation set, on a rendered polycrystal, and for speed.

``python -m stemkit.orientation.evaluation .runs/cu-cu2o`` evaluates a training run's latest
checkpoint (or a saved weights folder) and prints:

- (a) the figures of :mod:`stemkit.orientation.metrics` on the fixed simulated validation set
  of :func:`stemkit.orientation.train.validation_batch`;
- (b) the same on the peaks :func:`stemkit.find_peaks` finds in a
  :func:`~stemkit.physics.specimens.polycrystal` against its ground truth;
- (c) speed on this machine: the model stage (tokens in, decoded answers out) on the
  polycrystal's tokens and on a fixed batch of 1024 patterns × 32 tokens, and end to end
  (4D array in, maps out).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemkit.physics.rotations import quaternion_to_matrix
from stemkit.physics.specimens import polycrystal
from stemkit.orientation.decode import Decoded
from stemkit.orientation.inference import run_model
from stemkit.orientation.loss import SymmetryTable
from stemkit.orientation.mapper import OrientationMapper
from stemkit.orientation.metrics import orientation_metrics
from stemkit.orientation.tokens import tokens_from_peaks


def load_mapper(path: str | Path) -> OrientationMapper:
    """A checkpoint folder or file (``checkpoint.pt``) or a saved weights folder (``config.json``)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return OrientationMapper.load(path)
    return OrientationMapper.from_checkpoint(path)


def on_validation_set(mapper: OrientationMapper, size: int = 4096) -> dict[str, float]:
    """(a): accuracy on the fixed simulated validation set."""
    from stemkit.orientation.train import TrainingConfig, validation_batch

    batch = validation_batch(mapper.crystals_, TrainingConfig(validation_size=size), mapper.training_augmentation())
    decoded = run_model(mapper.model_, batch.features, batch.mask, _table(mapper),
                        ambiguity_weight=mapper.ambiguity_weight, ambiguity_angle=mapper.ambiguity_angle)
    return orientation_metrics(decoded, batch.rotations, batch.phase, [c.point_group for c in mapper.crystals_])


def on_polycrystal(mapper: OrientationMapper, *, scan_shape: tuple[int, int] = (32, 32), dose: float = 1e5,
                   seed: int = 0, **specimen: Any) -> dict[str, Any]:
    """(b) and (c): accuracy on a rendered polycrystal's found peaks, and speed."""
    from stemkit.preprocess import find_peaks

    sample = polycrystal(phases=tuple(c.name for c in mapper.crystals_), scan_shape=scan_shape, dose=dose, seed=seed,
                         **specimen)
    start = time.perf_counter()
    peaks = find_peaks(sample.intensity)
    peak_seconds = time.perf_counter() - start
    features, mask = tokens_from_peaks(peaks, max_tokens=mapper.max_tokens)
    model_rate = _model_rate(mapper, features, mask)
    start = time.perf_counter()
    result = mapper.predict(peaks, progress=False)
    predict_seconds = time.perf_counter() - start
    names = [c.name for c in mapper.crystals_]
    truth_phase = np.array([names.index(p) for p in sample["phase"].values.reshape(-1)])
    decoded = _as_decoded(result, names)
    metrics = orientation_metrics(decoded, quaternion_to_matrix(sample["quaternion"].values.reshape(-1, 4)),
                                  truth_phase, [c.point_group for c in mapper.crystals_])
    n = truth_phase.size
    return metrics | {
        "no_disk": float(100.0 * np.mean(result["n_peaks"].values == 0)),
        "median_disks": float(np.median(result["n_peaks"].values)),
        "model_stage_patterns_per_s": model_rate,
        "peaks_patterns_per_s": n / peak_seconds,
        "end_to_end_patterns_per_s": n / (peak_seconds + predict_seconds),
    }


def model_rate_fixed(mapper: OrientationMapper, batch: int = 1024, tokens: int = 32, repeats: int = 5) -> float:
    """Model-stage patterns/s on ``batch`` patterns of ``tokens`` tokens each (all real)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, tokens, mapper.model_.config.n_features, generator=generator).numpy()
    mask = np.ones((batch, tokens), bool)
    return _model_rate(mapper, features, mask, batch_size=batch, repeats=repeats)


def _model_rate(mapper: OrientationMapper, features: np.ndarray, mask: np.ndarray, batch_size: int = 4096,
                repeats: int = 3) -> float:
    table = _table(mapper)
    run_model(mapper.model_, features[:64], mask[:64], table)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run_model(mapper.model_, features, mask, table, batch_size=batch_size)
    return repeats * len(mask) / (time.perf_counter() - start)


def _table(mapper: OrientationMapper) -> SymmetryTable:
    return mapper._symmetry_table()


def _as_decoded(result, names: list[str]) -> Decoded:
    """The prediction Dataset back as :class:`Decoded` arrays (no-answer patterns: identity, phase -1)."""
    q = result["quaternion"].values.reshape(-1, 4)
    alternative = result["alternative"].values.reshape(-1, 4)
    missing = ~np.isfinite(q).all(axis=1)
    q[missing], alternative[missing] = (1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)
    phase = np.array([names.index(p) if p in names else -1 for p in result["phase"].values.reshape(-1)])
    zeros = np.zeros(len(q))
    return Decoded(rotation=quaternion_to_matrix(q), alternative=quaternion_to_matrix(alternative),
                   confidence=result["confidence"].values.reshape(-1), alternative_weight=zeros, separation_deg=zeros,
                   ambiguous=result["ambiguous"].values.reshape(-1), phase=phase,
                   phase_probability=result["phase_probability"].values.reshape(-1))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stemkit.orientation.evaluation PATH``."""
    parser = argparse.ArgumentParser(prog="python -m stemkit.orientation.evaluation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="a training checkpoint (folder or file) or a saved weights folder")
    parser.add_argument("--scan", type=int, default=32, help="polycrystal scan size (square)")
    parser.add_argument("--dose", type=float, default=1e5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    mapper = load_mapper(args.path)
    record = getattr(mapper, "training_record_", {}) or {}
    print(f"model: {args.path} (step {record.get('steps')}), torch threads {torch.get_num_threads()}")
    print("(a) simulated validation set:", _format(on_validation_set(mapper)))
    poly = on_polycrystal(mapper, scan_shape=(args.scan, args.scan), dose=args.dose, seed=args.seed)
    print(f"(b) polycrystal {args.scan}x{args.scan}, dose {args.dose:g}, seed {args.seed}, peaks by find_peaks:",
          _format(poly))
    print(f"(c) model stage, batch 1024 x 32 tokens: {model_rate_fixed(mapper):.0f} patterns/s")
    return 0


def _format(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


if __name__ == "__main__":
    sys.exit(main())
