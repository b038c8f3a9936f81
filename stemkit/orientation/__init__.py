"""Orientation and phase mapping with a transformer over Bragg-disk tokens (issue 5).

Modules, one concept each:

- :mod:`tokens`: Bragg disks → token features, the same for found and simulated peaks;
- :mod:`rotation_head`: 9 outputs → a proper rotation by SVD;
- :mod:`model`: the transformer with rotation hypotheses and a phase head;
- :mod:`loss`: the symmetry-aware geodesic for any point group, and the multiple-choice loss;
- :mod:`simulate`: training token sets degraded as a peak finder sees them;
- :mod:`calibration`: that degradation compared with :func:`stemkit.find_peaks` on rendered data;
- :mod:`decode`, :mod:`inference`: model outputs → answers, alternative and ambiguity, batched by length;
- :mod:`indexing`: candidate orientations from classical peak-pair indexing (no training needed);
- :mod:`refine`, :mod:`selection`: every candidate and its twin refined against the pattern's peaks, and chosen;
- :mod:`neighbours`: the map step: neighbours' orientations offered to doubtful patterns, twin flags;
- :mod:`tilt`: the last polish of each answer's tilt against its disks' amplitudes;
- :mod:`confidence`: the calibrated probability that an answer is within 5°;
- :mod:`metrics`: accuracy as the issue scores it;
- :mod:`train`: the training loop with exact checkpoint/resume, and its command line;
- :mod:`weights`: safetensors + JSON, checked by SHA-256;
- :mod:`mapper`: :class:`OrientationMapper`, the estimator;
- :mod:`ipf`: inverse-pole-figure colours (TSL key) and the key as an image;
- :mod:`export`: disorientations, orix crystal maps and EDAX/TSL .ang files.
"""

from stemkit.orientation.decode import Decoded, decode
from stemkit.orientation.export import disorientation, from_crystal_map, to_crystal_map, write_ang
from stemkit.orientation.inference import run_model
from stemkit.orientation.ipf import ipf_colors, ipf_key_image
from stemkit.orientation.loss import SymmetryTable, multiple_choice_loss, symmetric_geodesic
from stemkit.orientation.mapper import NotFittedError, OrientationMapper
from stemkit.orientation.metrics import orientation_metrics
from stemkit.orientation.neighbours import NeighbourSettings
from stemkit.orientation.model import ModelConfig, OrientationTransformer
from stemkit.orientation.rotation_head import rotation_from_9d
from stemkit.orientation.simulate import Augmentation, TrainingBatch, simulate_batch
from stemkit.orientation.tokens import FEATURES, tokens_from_arrays, tokens_from_peaks
from stemkit.orientation.weights import WeightsError, read_weights, write_weights

__all__ = [
    "Augmentation",
    "Decoded",
    "FEATURES",
    "ModelConfig",
    "NeighbourSettings",
    "NotFittedError",
    "OrientationMapper",
    "OrientationTransformer",
    "SymmetryTable",
    "Trainer",
    "TrainingBatch",
    "TrainingConfig",
    "WeightsError",
    "decode",
    "disorientation",
    "from_crystal_map",
    "ipf_colors",
    "ipf_key_image",
    "multiple_choice_loss",
    "orientation_metrics",
    "read_weights",
    "rotation_from_9d",
    "run_model",
    "simulate_batch",
    "symmetric_geodesic",
    "to_crystal_map",
    "tokens_from_arrays",
    "tokens_from_peaks",
    "write_ang",
    "write_weights",
]


def __getattr__(name: str):
    """``Trainer`` and ``TrainingConfig`` load on first use (``python -m stemkit.orientation.train`` then runs cleanly)."""
    if name in ("Trainer", "TrainingConfig"):
        from stemkit.orientation import train

        return getattr(train, name)
    raise AttributeError(f"module 'stemkit.orientation' has no attribute {name!r}")
