"""A calibrated confidence: the probability that an orientation answer is within 5° of the truth.

The refinement leaves evidence for each answer (:class:`~stemkit.orientation.selection.Evidence`):
how much of the measured pattern it explains, how complete the predicted pattern is, how
far the best different orientation scores behind, the residual, the number of peaks, and
the model's phase probability; on a scan also how many of its neighbours share the answer.
A logistic model of those features is fitted on simulated patterns whose truth is known, single
patterns and whole simulated scans of grains after the neighbours' offers (:func:`calibrate`),
so that among answers given confidence 0.8, about 80 % are right, on a map as for a lone pattern.
The fitted coefficients travel with the weights (plain JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stemkit.orientation.decode import Decoded
from stemkit.orientation.selection import Evidence

if TYPE_CHECKING:
    from stemkit.orientation.mapper import OrientationMapper

FEATURE_NAMES = ("score", "margin", "explained", "complete", "rms_per_mille", "log_peaks", "phase_probability",
                 "neighbour_support", "on_a_map")
TOLERANCE_DEG = 5.0


def features_of(evidence: Evidence, decoded: Decoded, n_peaks: np.ndarray,
                support: np.ndarray | None = None) -> np.ndarray:
    """``(n, 9)`` features in the order of :data:`FEATURE_NAMES`.

    ``support``: the share of each pattern's neighbours on the scan that share its answer
    (:func:`stemkit.orientation.neighbours.neighbour_support`); None for patterns without a map
    (``neighbour_support`` 0, ``on_a_map`` 0).
    """
    on_a_map = np.zeros(len(n_peaks)) if support is None else np.ones(len(n_peaks))
    support = np.zeros(len(n_peaks)) if support is None else np.asarray(support, float)
    return np.stack([
        evidence.score,
        evidence.score - evidence.alternative_score,
        evidence.explained,
        evidence.complete,
        1e3 * evidence.rms,
        np.log1p(n_peaks),
        decoded.phase_probability,
        support,
        on_a_map,
    ], axis=1).astype(np.float64)


@dataclass(frozen=True)
class ConfidenceModel:
    """Logistic model ``P(right) = 1 / (1 + exp(-(x · coef + intercept)))`` over :data:`FEATURE_NAMES`."""

    coef: tuple[float, ...]
    intercept: float
    tolerance_deg: float = TOLERANCE_DEG

    def probability(self, evidence: Evidence, decoded: Decoded, n_peaks: np.ndarray,
                    support: np.ndarray | None = None) -> np.ndarray:
        """Probability that each answer is within ``tolerance_deg``, ``(n,)`` float32 (``support``: see :func:`features_of`)."""
        return self.probability_of_features(features_of(evidence, decoded, n_peaks, support)).astype(np.float32)

    def probability_of_features(self, features: np.ndarray) -> np.ndarray:
        """Probability that each answer is within ``tolerance_deg``, from ``(n, 9)`` :func:`features_of` rows."""
        x = features @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))

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
        """Fit on ``(n, 9)`` features and booleans ``right`` (the answer was within the tolerance)."""
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


MAP_SHAPE = (48, 48)  # each simulated scan of the calibration
MAP_GRAINS = (90, 360, 1440)  # grains per scan: about 25, 6 and 1.6 patterns per grain


def calibrate(mapper: OrientationMapper, n: int = 8192, *, seed: int = 7, beam_energy_kev: float = 300.0,
              holdout: float = 0.5, maps: tuple[int, ...] = MAP_GRAINS) -> dict[str, Any]:
    """Fit ``mapper.confidence_model_`` on simulated patterns and scans; return the held-out check.

    ``n`` single patterns drawn as in training (:mod:`stemkit.orientation.simulate`) at one beam
    energy, and one :data:`MAP_SHAPE` scan per entry of ``maps`` (its number of grains, drawn the
    same way; :func:`~stemkit.orientation.simulate.simulate_seen_map`) mapped as ``predict``
    maps them, neighbours' offers included. The last ``holdout`` share of the single patterns and
    of every scan's rows is left out of the fit and measures it: the reliability tables and
    Brier scores of the fitted probabilities, for single patterns and for the scans.
    """
    singles = _single_patterns(mapper, n, seed, beam_energy_kev)
    scans = [_scan(mapper, grains, seed + 1 + index, beam_energy_kev) for index, grains in enumerate(maps)]
    fit, check = zip(*[_split(part, holdout) for part in [singles, *scans]])
    model = ConfidenceModel.fit(np.concatenate([f for f, _ in fit]), np.concatenate([r for _, r in fit]))
    mapper.confidence_model_ = model
    checks = {"single patterns": check[0],
              "scans": (np.concatenate([f for f, _ in check[1:]]), np.concatenate([r for _, r in check[1:]]))}
    report: dict[str, Any] = {"n_fit": int(sum(len(r) for _, r in fit))}
    for label, (features, right) in checks.items():
        probability = model.probability_of_features(features)
        report[label] = {"n_check": int(len(right)), "share_right": float(right.mean()),
                         "brier": float(np.mean((probability - right) ** 2)),
                         "reliability": reliability(probability, right)}
    return report


def _split(part: tuple[np.ndarray, np.ndarray], holdout: float) -> tuple[tuple, tuple]:
    """The first ``1 - holdout`` of features and right/wrong to fit, the rest to check (whole scan rows)."""
    features, right = part
    cut = int(len(right) * (1 - holdout))
    return (features[:cut], right[:cut]), (features[cut:], right[cut:])


def _single_patterns(mapper: OrientationMapper, n: int, seed: int, beam_energy_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """Features and right/wrong of ``n`` simulated single patterns (no map)."""
    from stemkit.orientation.simulate import simulate_seen_peaks

    conditions, seen = simulate_seen_peaks(mapper.crystals_, n, seed, mapper.training_augmentation(), beam_energy_kev)
    answers = mapper.answer_arrays(seen.kx, seen.ky, seen.counts, seen.valid, beam_energy_kev=beam_energy_kev,
                                   beam_radius=float(np.median(seen.probe_radius)), refine=True)
    return _features_and_right(mapper, answers, conditions, support=None)


def _scan(mapper: OrientationMapper, n_grains: int, seed: int, beam_energy_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """Features and right/wrong of a simulated scan of ``n_grains`` grains, mapped as ``predict`` maps it."""
    from stemkit.orientation.simulate import simulate_seen_map

    conditions, seen = simulate_seen_map(mapper.crystals_, MAP_SHAPE, n_grains, seed, mapper.training_augmentation(),
                                         beam_energy_kev)
    radius = float(np.median(seen.probe_radius))
    answers = mapper.answer_arrays(seen.kx, seen.ky, seen.counts, seen.valid, beam_energy_kev=beam_energy_kev,
                                   beam_radius=radius, refine=True)
    answers = mapper.answers_on_the_map(seen.kx, seen.ky, seen.counts, seen.valid, answers, scan_shape=MAP_SHAPE,
                                        beam_energy_kev=beam_energy_kev, beam_radius=radius)
    return _features_and_right(mapper, answers, conditions, support=answers["neighbour_support"])


def _features_and_right(mapper: OrientationMapper, answers: dict[str, np.ndarray], conditions: Any,
                        support: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    from stemkit.orientation.metrics import disorientation_deg

    groups = [c.point_group for c in mapper.crystals_]
    error = disorientation_deg(answers["rotation"], conditions.rotations, conditions.phase, groups)
    right = (error <= TOLERANCE_DEG) & (answers["phase"] == conditions.phase)
    evidence = Evidence(**{name: answers["evidence_" + name] for name in Evidence.__dataclass_fields__})
    decoded = Decoded(**{name: answers[name] for name in Decoded.__dataclass_fields__})
    return features_of(evidence, decoded, answers["n_peaks"], support), right
