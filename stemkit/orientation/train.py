"""Training the orientation transformer on data simulated on the fly, with exact checkpoint/resume.

Each step simulates a fresh batch (:func:`stemkit.orientation.simulate.simulate_batch`) from a
generator seeded by ``(seed, step)`` alone, so a batch never depends on what ran before;
a checkpoint then holds everything else a step depends on (model, optimizer, schedule,
torch's RNG, the step and the history) and resuming from it continues bit for bit.

Recipe (Je et al. 2026, with the multiple-choice rotation head of :mod:`~stemkit.orientation.loss`):
AdamW, linear warm-up then cosine decay, gradient-norm clipping, loss
``0.9 · orientation + 0.1 · phase``. A batch is processed in chunks of similar token count
with the padding trimmed (the gradient is the same, the step much faster).

Command line (``python -m stemkit.orientation.train --help``)::

    python -m stemkit.orientation.train --phases Cu Cu2O --steps 40000 --checkpoint-dir .runs/cu-cu2o

Checkpoints (``checkpoint.pt``, torch state dicts read back with ``weights_only=True``) are
for resuming; the weights to ship are written with :func:`stemkit.orientation.weights.write_weights`
(safetensors + JSON), e.g. by ``--export``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stemkit.physics.crystal import Crystal
from stemkit.orientation.inference import length_sorted_batches, run_model
from stemkit.orientation.loss import SymmetryTable, multiple_choice_loss
from stemkit.orientation.metrics import orientation_metrics
from stemkit.orientation.model import ModelConfig, OrientationTransformer
from stemkit.orientation.simulate import Augmentation, TrainingBatch, as_crystals, simulate_batch
from stemkit.orientation.weights import crystal_to_dict

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.jsonl"
# settings that may change between a checkpoint and its resumption (they do not alter a step)
RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "validate_every", "log_every"})


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings (stored in checkpoints)."""

    steps: int = 40_000
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 500
    final_lr_fraction: float = 0.02
    clip_norm: float = 1.0
    orientation_weight: float = 0.9
    phase_weight: float = 0.1
    hypothesis_weight: float = 0.1
    relaxation: float = 0.05
    chunk_size: int = 128
    seed: int = 0
    checkpoint_every: int = 500
    validate_every: int = 2000
    log_every: int = 100
    validation_size: int = 4096
    validation_seed: int = 20260521

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "chunk_size", "checkpoint_every", "validate_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainingConfig.{name} must be a positive integer; got {getattr(self, name)!r}")


def batch_generator(seed: int, step: int) -> np.random.Generator:
    """The generator of training step ``step``: a function of ``(seed, step)`` only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0, int(step)]))


def validation_batch(crystals: list[Crystal], config: TrainingConfig, augmentation: Augmentation) -> TrainingBatch:
    """The fixed simulated validation set (its own seed, the same for every run)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(config.validation_seed), 1]))
    return simulate_batch(crystals, config.validation_size, rng, augmentation)


def learning_rate_factor(step: int, config: TrainingConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``final_lr_fraction`` at ``steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.final_lr_fraction + (1 - config.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Trains an :class:`OrientationTransformer` on simulated data, checkpointing as it goes.

    Parameters
    ----------
    model
        The model to train (in place).
    phases
        The crystals (preset names or :class:`Crystal`), in the model's phase order.
    augmentation
        The simulation ranges.
    config
        Optimisation settings.
    device
        Torch device (``"cuda"`` for a GPU).
    checkpoint_dir
        Folder for ``checkpoint.pt`` and ``history.jsonl``; resumed from when it holds a
        checkpoint. ``None``: no checkpoints.
    progress
        Show a tqdm progress bar; otherwise print a line every ``log_every`` steps (``verbose``).
    verbose
        Print log lines and validation results when there is no progress bar.
    """

    def __init__(
        self,
        model: OrientationTransformer,
        phases: Sequence[str | Crystal],
        augmentation: Augmentation = Augmentation(),
        config: TrainingConfig = TrainingConfig(),
        *,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        verbose: bool = False,
    ) -> None:
        self.crystals = as_crystals(tuple(phases))
        if model.config.n_phases != len(self.crystals):
            raise ValueError(f"the model has {model.config.n_phases} phase outputs but {len(self.crystals)} phases "
                             f"were given; build it with ModelConfig(n_phases={len(self.crystals)})")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.augmentation, self.config = augmentation, config
        self.table = SymmetryTable([c.point_group for c in self.crystals]).to(self.device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress, self.verbose = progress, verbose
        self._validation: TrainingBatch | None = None
        if self.checkpoint_dir is not None and (self.checkpoint_dir / CHECKPOINT_FILE).is_file():
            self.load_checkpoint(self.checkpoint_dir / CHECKPOINT_FILE)

    def _factor(self, step: int) -> float:
        return learning_rate_factor(step, self.config)

    # ------------------------------------------------------------------ the loop
    def run(self, until: int | None = None) -> list[dict[str, Any]]:
        """Train from the current step to ``until`` (default: ``config.steps``); return the history."""
        stop = self.config.steps if until is None else min(int(until), self.config.steps)
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not self.progress, desc="training",
                   unit="step", dynamic_ncols=True)
        started, first = time.perf_counter(), self.step
        with bar:
            while self.step < stop:
                record = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", deg=f"{record['mean_deg']:.1f}")
                self._after_step(record, started, first)
        return self.history

    def _after_step(self, record: dict[str, Any], started: float, first: int) -> None:
        step, config = self.step, self.config
        if step % config.log_every == 0 or step == config.steps:
            rate = (step - first) * config.batch_size / max(time.perf_counter() - started, 1e-9)
            record |= {"samples_per_s": rate}
            self.history.append(record)
            self._log(record)
        if step % config.validate_every == 0 or step == config.steps:
            validation = {"step": step, "validation": self.validate()}
            self.history.append(validation)
            self._log(validation)
        if self.checkpoint_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            self.save_checkpoint()

    def train_step(self) -> dict[str, Any]:
        """One optimisation step on a freshly simulated batch; returns its losses."""
        config = self.config
        batch = simulate_batch(self.crystals, config.batch_size, batch_generator(config.seed, self.step),
                               self.augmentation)
        features = torch.as_tensor(batch.features, device=self.device)
        mask = torch.as_tensor(batch.mask, device=self.device)
        true = torch.as_tensor(batch.rotations, dtype=torch.float32, device=self.device)
        phase = torch.as_tensor(batch.phase, device=self.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"total": 0.0, "orientation": 0.0, "hypothesis": 0.0, "phase": 0.0}
        for indices, length in length_sorted_batches(batch.mask, config.chunk_size):
            rows = torch.as_tensor(indices, device=self.device)
            outputs = self.model(features[rows, :length], mask[rows, :length])
            parts = multiple_choice_loss(outputs, true[rows], phase[rows], self.table,
                                         orientation_weight=config.orientation_weight,
                                         phase_weight=config.phase_weight, hypothesis_weight=config.hypothesis_weight,
                                         relaxation=config.relaxation)
            (parts["total"] / config.batch_size).backward()
            for name in sums:
                sums[name] += float(parts[name].detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        mean = {name: value / config.batch_size for name, value in sums.items()}
        return {"step": self.step, "loss": mean["total"], "mean_deg": math.degrees(mean["orientation"]),
                "hypothesis_ce": mean["hypothesis"], "phase_ce": mean["phase"], "lr": lr}

    def validate(self, batch_size: int = 2048) -> dict[str, float]:
        """Accuracy on the fixed simulated validation set (see :mod:`stemkit.orientation.metrics`)."""
        if self._validation is None:
            self._validation = validation_batch(self.crystals, self.config, self.augmentation)
        batch = self._validation
        decoded = run_model(self.model, batch.features, batch.mask, self.table, batch_size=batch_size,
                            device=self.device)
        self.model.train()
        return orientation_metrics(decoded, batch.rotations, batch.phase, [c.point_group for c in self.crystals])

    def _log(self, record: dict[str, Any]) -> None:
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(self.checkpoint_dir / HISTORY_FILE, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.verbose and not self.progress:
            print(json.dumps(record, default=float), flush=True)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything a step depends on, for :func:`torch.save`."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "training_config": asdict(self.config),
            "model_config": self.model.config.to_dict(),
            "augmentation": self.augmentation.to_dict(),
            "phases": [crystal_to_dict(c) for c in self.crystals],
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the state atomically (to ``checkpoint_dir/checkpoint.pt`` by default)."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("no checkpoint_dir was given to the Trainer; pass a path to save_checkpoint")
            path = self.checkpoint_dir / CHECKPOINT_FILE
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(self.state(), temporary)
        os.replace(temporary, path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a state written by :meth:`save_checkpoint` (tensors and plain values only, never code)."""
        state = torch.load(Path(path), map_location=self.device, weights_only=True)
        self._check_compatible(state, Path(path))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step, self.history = int(state["step"]), list(state["history"])
        if self.checkpoint_dir is not None:  # the log file may have run ahead of the checkpoint
            lines = "".join(json.dumps(record) + "\n" for record in self.history)
            (self.checkpoint_dir / HISTORY_FILE).write_text(lines)

    def _check_compatible(self, state: dict[str, Any], path: Path) -> None:
        mine = {"model_config": self.model.config.to_dict(), "augmentation": self.augmentation.to_dict(),
                "phases": [c.name for c in self.crystals]}
        theirs = {"model_config": state["model_config"],
                  "augmentation": Augmentation.from_dict(state["augmentation"]).to_dict(),
                  "phases": [p["name"] for p in state["phases"]]}
        for key in mine:
            if mine[key] != theirs[key]:
                raise ValueError(f"{path} was written with {key} {theirs[key]}, but this run has {mine[key]}; "
                                 f"resume with the same settings or use a new checkpoint_dir")
        changed = {f.name for f in fields(TrainingConfig)
                   if state["training_config"].get(f.name) != getattr(self.config, f.name)} - RESUMABLE_CHANGES
        if changed:
            raise ValueError(f"{path} was written with other training settings ({', '.join(sorted(changed))}: "
                             f"{ {k: state['training_config'].get(k) for k in sorted(changed)} }); only "
                             f"{sorted(RESUMABLE_CHANGES)} may change on resumption")


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training options, for ``python -m stemkit.orientation.train`` and ``stemkit train``."""
    parser.add_argument("--phases", nargs="+", default=["Cu", "Cu2O"], help="preset crystal names")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="checkpoints and history; resumed from")
    parser.add_argument("--export", type=Path, default=None,
                        help="folder for the final safetensors weights (default: CHECKPOINT_DIR/final)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest on a shared, busy machine)")
    defaults = TrainingConfig()
    for name in ("steps", "batch_size", "learning_rate", "seed", "checkpoint_every", "validate_every", "log_every",
                 "warmup_steps", "validation_size"):
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    model = ModelConfig()
    for name in ("d_model", "n_heads", "n_layers", "feedforward", "n_hypotheses"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(model, name))
    parser.add_argument("--max-tokens", type=int, default=Augmentation().max_tokens)
    parser.add_argument("--bloch-fraction", type=float, default=Augmentation().bloch_fraction,
                        help="share of training patterns simulated dynamically (Bloch waves) instead of kinematically")
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="fine-tune: start from the weights in this folder (same phases and model size) with a "
                             "new optimiser and schedule")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Train as the parsed options say; export the final weights; return the exit status."""
    from stemkit.orientation.mapper import OrientationMapper

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    augmentation = Augmentation(max_tokens=args.max_tokens, bloch_fraction=args.bloch_fraction)
    mapper = OrientationMapper(phases=tuple(args.phases), d_model=args.d_model, n_heads=args.n_heads,
                               n_layers=args.n_layers, feedforward=args.feedforward, n_hypotheses=args.n_hypotheses,
                               max_tokens=args.max_tokens, augmentation=augmentation)
    if args.init_weights is not None:
        mapper = _warm_start_mapper(mapper, args.init_weights)
    training = {name: getattr(args, name) for name in ("learning_rate", "seed", "checkpoint_every", "validate_every",
                                                         "log_every", "warmup_steps", "validation_size")}
    mapper.fit(steps=args.steps, batch_size=args.batch_size, device=args.device, checkpoint_dir=args.checkpoint_dir,
               progress=not args.no_progress, verbose=True, warm_start=args.init_weights is not None, **training)
    export = args.export if args.export is not None else args.checkpoint_dir / "final"
    mapper.training_record_["command"] = " ".join(["python -m stemkit.orientation.train", *map(str, argv_of(args))])
    mapper.save(export)
    print(f"weights written to {export} (sha256 {mapper.weights_sha256_})", flush=True)
    return 0


def _warm_start_mapper(mapper: Any, folder: Path) -> Any:
    """``mapper`` (the run's settings) holding the weights of ``folder``, which must fit them."""
    from stemkit.orientation.mapper import OrientationMapper

    loaded = OrientationMapper.load(folder)
    if loaded.model_config() != mapper.model_config():
        raise ValueError(f"the weights in {folder} are for {loaded.model_config()}, but this run builds "
                         f"{mapper.model_config()}; give the same --d-model, --n-layers, --n-hypotheses ... and phases")
    names = lambda m: [p if isinstance(p, str) else p.name for p in m.phases]  # noqa: E731
    if names(loaded) != names(mapper):
        raise ValueError(f"the weights in {folder} are for phases {names(loaded)}, not {names(mapper)}")
    mapper.model_, mapper.weights_sha256_ = loaded.model_, loaded.weights_sha256_
    return mapper


def argv_of(args: argparse.Namespace) -> list[str]:
    """The options of a parsed command line, spelled out again (for the weights' record)."""
    words = []
    for name, value in sorted(vars(args).items()):
        if name in ("command", "run"):  # the stemkit command's own bookkeeping
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            words += [flag] if value else []
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        elif value is not None and not callable(value):
            words += [flag, str(value)]
    return words


def main(argv: Sequence[str] | None = None, prog: str = "python -m stemkit.orientation.train") -> int:
    """``python -m stemkit.orientation.train`` (and ``stemkit train``)."""
    parser = add_arguments(argparse.ArgumentParser(prog=prog,
                                                   description="Train the orientation transformer on simulated data"))
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
