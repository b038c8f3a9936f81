"""Reading answers, alternatives and ambiguity out of the hypotheses; scoring them as the issue does."""

import numpy as np
import torch

from stemkit.orientation import SymmetryTable, decode, orientation_metrics
from stemkit.physics import PointGroup, axis_angle_to_matrix, quaternion_to_matrix, random_quaternions

CUBIC = PointGroup.from_name("m-3m")


def outputs(first, second, weights, phase_logits=None):
    n = len(first)
    rotations = torch.as_tensor(np.stack([first, second], axis=1), dtype=torch.float32)
    logits = torch.log(torch.as_tensor(weights, dtype=torch.float32))
    phase_logits = torch.zeros(n, 1) if phase_logits is None else phase_logits
    return {"rotations": rotations, "hypothesis_logits": logits, "phase_logits": phase_logits}


def test_a_turn_about_the_beam_with_shared_weight_is_ambiguous_but_a_symmetry_twin_is_not():
    truth = quaternion_to_matrix(random_quaternions(3, seed=0))
    about_beam = axis_angle_to_matrix([0, 0, 1], 180.0) @ truth  # a different orientation, same kinematic spots
    cubic_twin = truth @ axis_angle_to_matrix([0, 0, 1], 90.0)  # the same orientation
    second = np.stack([about_beam[0], cubic_twin[1], about_beam[2]])
    weights = [[0.55, 0.45], [0.5, 0.5], [0.9, 0.1]]
    decoded = decode(outputs(truth, second, weights), SymmetryTable([CUBIC]))
    assert decoded.ambiguous.tolist() == [True, False, False]
    np.testing.assert_allclose(decoded.confidence, [0.55, 0.5, 0.9], atol=1e-6)
    np.testing.assert_allclose(decoded.rotation, truth, atol=1e-6)
    np.testing.assert_allclose(decoded.alternative[0], about_beam[0], atol=1e-6)
    assert decoded.separation_deg[1] < 0.5


def test_the_heavier_hypothesis_is_the_answer():
    truth = quaternion_to_matrix(random_quaternions(2, seed=1))
    other = quaternion_to_matrix(random_quaternions(2, seed=2))
    decoded = decode(outputs(truth, other, [[0.3, 0.7], [0.8, 0.2]]), SymmetryTable([CUBIC]))
    np.testing.assert_allclose(decoded.rotation, np.stack([other[0], truth[1]]), atol=1e-6)
    np.testing.assert_allclose(decoded.alternative, np.stack([truth[0], other[1]]), atol=1e-6)


def test_metrics_count_a_correctly_flagged_ambiguity_as_right():
    truth = quaternion_to_matrix(random_quaternions(4, seed=3))
    turned = axis_angle_to_matrix([0, 0, 1], 180.0) @ truth
    first = np.stack([truth[0], turned[1], turned[2], truth[3]])
    second = np.stack([turned[0], truth[1], truth[2], truth[3]])
    weights = [[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.5, 0.5]]
    decoded = decode(outputs(first, second, weights), SymmetryTable([CUBIC]))
    metrics = orientation_metrics(decoded, truth, np.zeros(4, int), [CUBIC])
    assert metrics["within_5deg"] == 50.0  # patterns 0 and 3
    assert metrics["within_5deg_or_flagged"] == 75.0  # and 1, flagged with the truth as alternative
    assert metrics["best_hypothesis_within_5deg"] == 100.0
    assert metrics["ambiguous"] == 50.0 and metrics["phase_accuracy"] == 100.0
