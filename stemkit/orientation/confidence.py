"""A calibrated confidence: the probability that an orientation answer is within 5° of the truth.

The refinement leaves evidence for each answer (:class:`~stemkit.orientation.selection.Evidence`):
how much of the measured pattern it explains, how complete the predicted pattern is, how
far the best different orientation scores behind, the residual, the number of peaks, and
the model's phase probability. A logistic model of those features is fitted on simulated
patterns whose truth is known (:func:`calibrate`), so that among answers given confidence
0.8, about 80 % are right. The fitted coefficients travel with the weights (plain JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stemkit.orientation.decode import Decoded
from stemkit.orientation.selection import Evidence

if TYPE_CHECKING:
    from stemkit.orientation.mapper import OrientationMapper

FEATURE_NAMES = ("score", "margin", "explained", "complete", "rms_per_mille", "log_peaks", "phase_probability")
TOLERANCE_DEG = 5.0


def features_of(evidence: Evidence, decoded: Decoded, n_peaks: np.ndarray) -> np.ndarray:
    """``(n, 7)`` features in the order of :data:`FEATURE_NAMES`."""
    return np.stack([
        evidence.score,
        evidence.score - evidence.alternative_score,
        evidence.explained,
        evidence.complete,
        1e3 * evidence.rms,
        np.log1p(n_peaks),
        decoded.phase_probability,
    ], axis=1).astype(np.float64)


@dataclass(frozen=True)
class ConfidenceModel:
    """Logistic model ``P(right) = 1 / (1 + exp(-(x · coef + intercept)))`` over :data:`FEATURE_NAMES`."""

    coef: tuple[float, ...]
    intercept: float
    tolerance_deg: float = TOLERANCE_DEG

    def probability(self, evidence: Evidence, decoded: Decoded, n_peaks: np.ndarray) -> np.ndarray:
        """Probability that each answer is within ``tolerance_deg``, ``(n,)`` float32."""
        x = features_of(evidence, decoded, n_peaks) @ np.asarray(self.coef) + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the weights' JSON."""
        return {"features": list(FEATURE_NAMES), "coef": list(self.coef), "intercept": self.intercept,
                "tolerance_deg": self.tolerance_deg}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ConfidenceModel:
        """Inverse of :meth:`to_dict`; refuses coefficients made for other features."""
        if list(values.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError(f"the confidence model was fitted on features {values.get('features')}, this stemkit "
                             f"computes {list(FEATURE_NAMES)}; calibrate again with stemkit.orientation.confidence.calibrate(mapper)")
        return cls(tuple(float(c) for c in values["coef"]), float(values["intercept"]),
                   float(values.get("tolerance_deg", TOLERANCE_DEG)))

    @classmethod
    def fit(cls, features: np.ndarray, right: np.ndarray, tolerance_deg: float = TOLERANCE_DEG) -> ConfidenceModel:
        """Fit on ``(n, 7)`` features and booleans ``right`` (the answer was within the tolerance)."""
        from sklearn.linear_model import LogisticRegression

        right = np.asarray(right, bool)
        if right.all() or not right.any():
            raise ValueError("calibration needs both right and wrong answers; simulate more (or harder) patterns")
        model = LogisticRegression(C=10.0, max_iter=2000).fit(features, right)
        return cls(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), tolerance_deg)


def reliability(probability: np.ndarray, right: np.ndarray, bins: int = 5) -> list[tuple[float, float, int]]:
    """``(mean predicted, observed share right, count)`` per probability bin: the calibration check."""
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (probability >= low) & ((probability < high) | (high == 1.0))
        if inside.any():
            rows.append((float(probability[inside].mean()), float(np.mean(right[inside])), int(inside.sum())))
    return rows


def calibrate(mapper: OrientationMapper, n: int = 8192, *, seed: int = 7, beam_energy_kev: float = 300.0,
              holdout: float = 0.5) -> dict[str, Any]:
    """Fit ``mapper.confidence_model_`` on ``n`` simulated patterns; return the held-out check.

    The patterns are drawn as in training (:mod:`stemkit.orientation.simulate`) at one beam
    energy; half are used to fit, the other half to measure: the reliability table and the
    Brier score of the fitted probabilities.
    """
    from stemkit.orientation.metrics import disorientation_deg
    from stemkit.orientation.simulate import simulate_seen_peaks

    conditions, seen = simulate_seen_peaks(mapper.crystals_, n, seed, mapper.training_augmentation(), beam_energy_kev)
    radius = float(np.median(seen.probe_radius))
    answers = mapper.answer_arrays(seen.kx, seen.ky, seen.counts, seen.valid, beam_energy_kev=beam_energy_kev,
                                   beam_radius=radius, refine=True)
    groups = [c.point_group for c in mapper.crystals_]
    error = disorientation_deg(answers["rotation"], conditions.rotations, conditions.phase, groups)
    right = (error <= TOLERANCE_DEG) & (answers["phase"] == conditions.phase)
    evidence = Evidence(**{name: answers["evidence_" + name] for name in Evidence.__dataclass_fields__})
    decoded = Decoded(**{name: answers[name] for name in Decoded.__dataclass_fields__})
    features = features_of(evidence, decoded, answers["n_peaks"])
    cut = int(n * (1 - holdout))
    model = ConfidenceModel.fit(features[:cut], right[:cut])
    probability = model.probability(Evidence(**{k: v[cut:] for k, v in vars(evidence).items()}),
                                    Decoded(**{k: v[cut:] for k, v in vars(decoded).items()}), answers["n_peaks"][cut:])
    mapper.confidence_model_ = model
    held = right[cut:]
    return {"n_fit": cut, "n_check": n - cut, "share_right": float(held.mean()),
            "brier": float(np.mean((probability - held) ** 2)), "reliability": reliability(probability, held),
            "median_error_deg": float(np.median(error))}
