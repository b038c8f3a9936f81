"""Shipped weights: a safetensors file with a JSON record beside it, checked by SHA-256 on load.

A weights folder holds ``model.safetensors`` (tensors only: loading never unpickles code)
and ``config.json``: the format, the model's hyper-parameters, the phases (each crystal in
full: lattice, atoms, point group), the token and decoding settings, the training record,
and the SHA-256 of the weights file. :func:`read_weights` recomputes the hash and refuses a
file that does not match, naming it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stemkit.physics.crystal import Atom, Crystal
from stemkit.physics.symmetry import PointGroup
from stemkit.orientation.model import ModelConfig, OrientationTransformer

FORMAT = "stemkit.orientation/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class WeightsError(ValueError):
    """A weights folder is missing, altered or of another format."""


@dataclass
class WeightsRecord:
    """Everything in ``config.json`` besides the tensors."""

    model: ModelConfig
    phases: list[Crystal]
    settings: dict[str, Any] = field(default_factory=dict)  # tokens, decoding, augmentation
    training: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def crystal_to_dict(crystal: Crystal) -> dict[str, Any]:
    """A crystal as plain JSON values (lattice, every atom, the point group's rotations)."""
    return {
        "name": crystal.name,
        "lattice_parameters": list(crystal.lattice_parameters),
        "atoms": [{"element": a.element, "position": list(a.position), "occupancy": a.occupancy, "b_iso": a.b_iso}
                  for a in crystal.atoms],
        "space_group": crystal.space_group,
        "point_group": {"name": crystal.point_group.name, "rotations": crystal.point_group.rotations.tolist()},
        "is_layer": crystal.is_layer,
    }


def crystal_from_dict(values: dict[str, Any]) -> Crystal:
    """Inverse of :func:`crystal_to_dict`."""
    atoms = [Atom(a["element"], tuple(a["position"]), a["occupancy"], a["b_iso"]) for a in values["atoms"]]
    group = PointGroup(values["point_group"]["name"], np.asarray(values["point_group"]["rotations"], float))
    return Crystal(*values["lattice_parameters"], atoms, name=values["name"], space_group=values["space_group"],
                   point_group=group, is_layer=values["is_layer"])


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_weights(folder: str | Path, model: OrientationTransformer, record: WeightsRecord) -> str:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created); return the weights' SHA-256."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
    digest = sha256_of(folder / WEIGHTS_FILE)
    config = {
        "format": FORMAT,
        "model": record.model.to_dict(),
        "phases": [crystal_to_dict(c) for c in record.phases],
        "settings": record.settings,
        "training": record.training,
        "weights": {"file": WEIGHTS_FILE, "sha256": digest},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return digest


def read_weights(folder: str | Path) -> tuple[OrientationTransformer, WeightsRecord]:
    """Load a folder written by :func:`write_weights`, after checking the weights' SHA-256.

    Raises
    ------
    WeightsError
        If a file is missing, the format is unknown, or the weights file's hash is not the
        one recorded (the file was altered or truncated).
    """
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise WeightsError(f"{path} is missing: a weights folder needs {CONFIG_FILE} and {WEIGHTS_FILE} "
                               f"(written by OrientationMapper.save)")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise WeightsError(f"{config_path} has format {config.get('format')!r}; this stemkit reads {FORMAT!r}")
    expected, actual = config["weights"]["sha256"], sha256_of(weights_path)
    if actual != expected:
        raise WeightsError(f"{weights_path} does not match the SHA-256 recorded in {config_path}: expected {expected}, "
                           f"got {actual}. The file was altered or truncated; restore it or save the model again.")
    model = OrientationTransformer(ModelConfig(**config["model"]))
    model.load_state_dict(load_file(str(weights_path)), strict=True)
    record = WeightsRecord(model=model.config, phases=[crystal_from_dict(p) for p in config["phases"]],
                           settings=config.get("settings", {}), training=config.get("training", {}), sha256=actual)
    return model.eval(), record


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same names and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
