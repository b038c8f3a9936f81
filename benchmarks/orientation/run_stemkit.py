"""Orientation and phase maps with stemkit's OrientationMapper (issue 5), timed end to end and model alone.

On the data of ``make_data.py``: the cube becomes the canonical DataArray
(``stemkit.datacube`` with the calibration), and ``OrientationMapper.predict`` maps it, peak
finding included (``stemkit.find_peaks`` with its defaults: no vacuum probe, no tuning).

- end to end: 4D array in memory → result Dataset (best of ``--repeat`` runs after a
  warm-up on 4 patterns);
- model stage alone: the same patterns' tokens → decoded answers
  (``stemkit.orientation.run_model``), best of ``--repeat``.

Weights: ``--weights PATH``, a folder written by ``OrientationMapper.save`` (default
``stemkit/pretrained/cu-cu2o``) or a training checkpoint (folder or ``checkpoint.pt``), which
is saved as a weights folder under ``data/`` first so that the figures name the SHA-256 of
the exact weights used.

Writes ``results/stemkit[-quick].npz``: ``quaternion``, ``alternative`` (scan_y, scan_x, 4),
``ambiguous``, ``phase`` (names), ``confidence``, ``seconds``, ``cpu_seconds`` (CPU time of each
end-to-end run, all threads), ``model_seconds``, ``phases``, ``params`` (JSON: weights path and
SHA-256, threads, batch size).

Run: ``.venv/bin/python benchmarks/orientation/run_stemkit.py [--quick] [--weights PATH]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stemkit.orientation import OrientationMapper, run_model, tokens_from_peaks  # noqa: E402
from stemkit.orientation.loss import SymmetryTable  # noqa: E402
from stemkit.orientation.inference import default_batch_size  # noqa: E402
from stemkit.preprocess import find_peaks  # noqa: E402
from make_data import data_dir, load_cube  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_WEIGHTS = ROOT / "stemkit" / "pretrained" / "cu-cu2o"


def load(path: Path, scratch: Path) -> tuple[OrientationMapper, str]:
    """The mapper of a weights folder or a training checkpoint (saved as weights first), and a description."""
    if (path / "config.json").is_file():
        return OrientationMapper.load(path), str(path)
    if not path.exists():
        raise FileNotFoundError(f"no weights at {path}: pass --weights with a folder written by OrientationMapper.save "
                                "or a training checkpoint (e.g. .runs/cu-cu2o)")
    mapper = OrientationMapper.from_checkpoint(path)
    step = (getattr(mapper, "training_record_", {}) or {}).get("steps")
    target = scratch / "weights-from-checkpoint"
    mapper.save(target)
    return OrientationMapper.load(target), f"{path} (checkpoint at step {step}, saved as {target.relative_to(ROOT)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 16x16 development data")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="patterns per model call (default: the mapper's, 256 on a CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = data_dir(args.quick)
    mapper, described = load(args.weights, folder)
    data = load_cube(folder)
    n = data.sizes["scan_y"] * data.sizes["scan_x"]
    print(f"stemkit: {n} patterns, weights {described}, sha256 {mapper.weights_sha256_}, "
          f"{torch.get_num_threads()} torch threads", flush=True)

    mapper.predict(data.isel(scan_y=slice(0, 2), scan_x=slice(0, 2)), progress=False)  # warm-up
    seconds, cpu = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = mapper.predict(data, batch_size=args.batch_size, progress=False)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)

    peaks = find_peaks(data)
    features, mask = tokens_from_peaks(peaks, max_tokens=mapper.max_tokens)
    table = SymmetryTable([c.point_group for c in mapper.crystals_])
    run_model(mapper.model_, features[:64], mask[:64], table)  # warm-up
    model_seconds = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run_model(mapper.model_, features, mask, table, batch_size=args.batch_size)
        model_seconds.append(time.perf_counter() - start)

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    target = out / f"stemkit{'-quick' if args.quick else ''}.npz"
    params = {"weights": described, "weights_sha256": mapper.weights_sha256_, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size or default_batch_size("cpu"), "peaks": "find_peaks defaults"}
    np.savez(target, quaternion=result["quaternion"].values, alternative=result["alternative"].values,
             ambiguous=result["ambiguous"].values, phase=result["phase"].values.astype(str),
             confidence=result["confidence"].values, seconds=np.array(seconds), cpu_seconds=np.array(cpu),
             model_seconds=np.array(model_seconds),
             phases=np.array([c.name for c in mapper.crystals_]), params=json.dumps(params))
    print(f"stemkit: end to end best {min(seconds):.2f} s ({n / min(seconds):,.0f} patterns/s), model stage "
          f"{n / min(model_seconds):,.0f} patterns/s → {target.name}", flush=True)


if __name__ == "__main__":
    main()
