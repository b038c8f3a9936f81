"""Orientation and phase mapping with a transformer over Bragg-disk tokens (in progress).

Present: :mod:`tokens` (Bragg disks → token features, the same for found and simulated
peaks), :mod:`model` (the transformer with rotation hypotheses and a phase head), :mod:`simulate`
(training token sets degraded as a peak finder sees them),
:mod:`rotation_head` (9 outputs → a proper rotation by SVD) and :mod:`loss` (the
symmetry-aware geodesic distance for any point group, per sample).
"""

from stemkit.orientation.model import ModelConfig, OrientationTransformer
from stemkit.orientation.loss import SymmetryTable, symmetric_geodesic
from stemkit.orientation.rotation_head import rotation_from_9d
from stemkit.orientation.simulate import Augmentation, TrainingBatch, simulate_batch
from stemkit.orientation.tokens import FEATURES, tokens_from_arrays, tokens_from_peaks

__all__ = ["Augmentation", "FEATURES", "ModelConfig", "OrientationTransformer", "SymmetryTable", "TrainingBatch", "rotation_from_9d", "simulate_batch", "symmetric_geodesic", "tokens_from_arrays", "tokens_from_peaks"]
