"""Refinement against a pattern's own peaks, the choice between candidates, and the calibrated confidence."""

import numpy as np
import pytest
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.confidence import FEATURE_NAMES, ConfidenceModel, reliability
from stemkit.orientation.decode import Decoded
from stemkit.orientation.loss import SymmetryTable
from stemkit.orientation.metrics import disorientation_deg
from stemkit.orientation.refine import (
    VISIBLE_S,
    ReflectionTable,
    RefinementSettings,
    _choose_reflections,
    _match,
    _Pool,
    excitation_error,
    refine_candidates,
    skew_exp,
)
from stemkit.orientation.selection import Evidence, select, strongest_peaks
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import axis_angle_to_matrix, misorientation_angle, quaternion_to_matrix, random_quaternions
from stemkit.physics.specimens import zone_axis_rotation


def clean_peaks(name: str, rotations: np.ndarray, *, k_max: float = 1.6, thickness: float = 400.0, s_max: float = 0.1):
    """Exact kinematic spots (positions and √I weights) of ``rotations``."""
    spots = simulate_kinematic(crystal(name), rotations, beam_energy_kev=300.0, k_max=k_max, thickness=thickness,
                               s_max=s_max, max_reflections=24, dtype=np.float64)
    weight = np.where(spots.valid, np.sqrt(np.where(spots.valid, spots.intensity, 0.0)), 0.0)
    return tuple(torch.tensor(np.nan_to_num(a), dtype=torch.float32) for a in (spots.kx, spots.ky, weight))


def perturbed(rotations: np.ndarray, degrees: float, seed: int = 0) -> torch.Tensor:
    axis = np.random.default_rng(seed).normal(size=(len(rotations), 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    turn = skew_exp(torch.tensor(axis * np.radians(degrees), dtype=torch.float32))
    return turn @ torch.tensor(rotations, dtype=torch.float32)


def test_skew_exp_is_the_rotation_about_the_vector():
    axis, angle = np.array([1.0, -2.0, 0.5]), 37.0
    omega = torch.tensor(axis / np.linalg.norm(axis) * np.radians(angle))
    np.testing.assert_allclose(skew_exp(omega).numpy(), axis_angle_to_matrix(axis, angle), atol=1e-12)
    np.testing.assert_allclose(skew_exp(torch.zeros(3, dtype=torch.float64)).numpy(), np.eye(3))


def test_excitation_error_matches_the_simulator():
    cu = crystal("Cu")
    rotation = quaternion_to_matrix(random_quaternions(1, seed=4))
    spots = simulate_kinematic(cu, rotation, beam_energy_kev=300.0, k_max=1.5, s_max=0.1, excitation_error_width=0.05)
    g_lab = rotation[0] @ cu.g_vectors(spots.hkl[0][spots.valid[0]]).T
    from stemkit.data.units import wavelength_angstrom

    mine = excitation_error(torch.tensor(g_lab.T), 1.0 / wavelength_angstrom(300.0)).numpy()
    np.testing.assert_allclose(mine, spots.excitation_error[0][spots.valid[0]], atol=1e-6)


def test_matching_picks_the_reflection_of_least_cost():
    k0 = 1.0 / wavelength_angstrom(300.0)
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(4, 9, 2, generator=generator) * 2 - 1
    g_lab = torch.cat([torch.rand(4, 2, 30, 2, generator=generator) * 2 - 1,
                       torch.rand(4, 2, 30, 1, generator=generator) * 0.2 - 0.1], dim=-1)
    best, distance2 = _match(points, g_lab, k0, radius=0.1)
    full = ((points[:, None, :, None, :] - g_lab[:, :, None, :, :2]) ** 2).sum(-1)  # (B, C, P, M)
    cost = full / 0.1 ** 2 + (excitation_error(g_lab, k0) ** 2 / 0.1 ** 2)[:, :, None, :]
    chosen = torch.gather(cost, -1, best.unsqueeze(-1)).squeeze(-1)
    np.testing.assert_allclose(chosen, cost.amin(-1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(distance2, torch.gather(full, -1, best.unsqueeze(-1)).squeeze(-1), atol=1e-6)


def test_reflections_are_chosen_by_their_excitation_error_with_or_without_a_pool():
    cu2o = crystal("Cu2O")
    table = ReflectionTable.of(cu2o)
    k0 = 1.0 / wavelength_angstrom(300.0)
    rotations = torch.tensor(quaternion_to_matrix(random_quaternions(6, seed=2)), dtype=torch.float32)[:, None]
    reach = torch.full((6,), 1.5)
    index, chosen = _choose_reflections(rotations, table, reach, k0, 40, angle=0.0)
    # the reference: the exact excitation error of every reflection within reach
    g_lab = torch.einsum("bcij,nj->bcni", rotations, table.g)
    rank = excitation_error(g_lab, k0).abs() / VISIBLE_S - 0.1 * table.amplitude
    rank = torch.where(g_lab[..., :2].norm(dim=-1) <= 1.5, rank, torch.full_like(rank, torch.inf))
    expected = rank.topk(40, dim=-1, largest=False).indices
    for row in range(6):
        assert set(index[row, 0].tolist()) == set(expected[row, 0].tolist())
    np.testing.assert_allclose(chosen, table.g[index])
    # from a wider pool that holds them, the same choice
    pool = _Pool.of(*_choose_reflections(rotations, table, reach, k0, 300, angle=0.2), table)
    pooled, pooled_g = _choose_reflections(rotations, table, reach, k0, 40, angle=0.0, pool=pool)
    for row in range(6):
        assert set(pooled[row, 0].tolist()) == set(index[row, 0].tolist())
    np.testing.assert_allclose(pooled_g, table.g[pooled])


@pytest.mark.parametrize("name, median_limit", [("Cu", 0.5), ("Cu2O", 0.2)])
def test_a_rotation_round_trips_through_its_peaks(name, median_limit):
    """Clean simulated patterns, started 3° off: the refinement brings the answer back within tolerance."""
    truth = quaternion_to_matrix(random_quaternions(32, seed=2))
    kx, ky, weight = clean_peaks(name, truth)
    refined = refine_candidates(kx, ky, weight, perturbed(truth, 3.0)[:, None], ReflectionTable.of(crystal(name)),
                                beam_energy_kev=300.0)
    error = misorientation_angle(refined.rotations[:, 0].double().numpy(), truth, crystal(name).point_group)
    assert np.median(error) < median_limit
    assert np.mean(error < 2.0) >= 0.9
    assert (refined.explained > 0.95).float().mean() >= 0.9  # the refined rotation accounts for the peaks


def test_a_wrong_candidate_scores_below_the_right_one():
    truth = quaternion_to_matrix(random_quaternions(16, seed=5))
    kx, ky, weight = clean_peaks("Cu2O", truth)
    wrong = quaternion_to_matrix(random_quaternions(16, seed=6))
    candidates = torch.stack([perturbed(truth, 2.0), torch.tensor(wrong, dtype=torch.float32)], dim=1)
    refined = refine_candidates(kx, ky, weight, candidates, ReflectionTable.of(crystal("Cu2O")), beam_energy_kev=300.0)
    assert (refined.score[:, 0] > refined.score[:, 1]).float().mean() >= 0.9


def _decoded(rotations: np.ndarray, phase: int = 0) -> Decoded:
    n = len(rotations)
    return Decoded(rotation=rotations, alternative=rotations, confidence=np.ones(n, np.float32),
                   alternative_weight=np.zeros(n, np.float32), separation_deg=np.zeros(n, np.float32),
                   ambiguous=np.zeros(n, bool), phase=np.full(n, phase), phase_probability=np.ones(n, np.float32))


def test_a_zone_axis_pattern_is_flagged_ambiguous_with_its_twin():
    """At [111] a kinematic zero-order pattern cannot tell R from 180° about the beam (not a symmetry of m-3m)."""
    cu = crystal("Cu")
    rotation = zone_axis_rotation(cu, (1, 1, 1))[None]
    kx, ky, weight = clean_peaks("Cu", rotation, k_max=1.2, thickness=100.0, s_max=0.02)
    chosen, evidence = select(_decoded(rotation), (kx, ky, weight), [ReflectionTable.of(cu)],
                              SymmetryTable([cu.point_group]), beam_energy_kev=300.0)
    twin = np.diag([-1.0, -1.0, 1.0]) @ rotation
    assert misorientation_angle(twin, rotation, cu.point_group)[0] > 5.0  # a different orientation
    assert chosen.ambiguous[0]
    found = {round(float(misorientation_angle(r, rotation, cu.point_group)[0]))
             for r in (chosen.rotation, chosen.alternative)}
    assert found == {0, round(float(misorientation_angle(twin, rotation, cu.point_group)[0]))}
    assert evidence.score[0] > 0.8


def test_an_off_axis_pattern_is_not_ambiguous():
    cu2o = crystal("Cu2O")
    truth = quaternion_to_matrix(random_quaternions(8, seed=9))
    peaks = clean_peaks("Cu2O", truth)
    start = perturbed(truth, 2.0).double().numpy()
    chosen, evidence = select(_decoded(start), peaks, [ReflectionTable.of(cu2o)], SymmetryTable([cu2o.point_group]),
                              beam_energy_kev=300.0)
    error = disorientation_deg(chosen.rotation, truth, np.zeros(8, int), [cu2o.point_group])
    # Known limit (issue 5 note): off axis, a refined twin still wins for about 1 pattern in 4.
    assert np.median(error) < 0.5 and np.mean(error < 2.0) >= 0.75
    assert np.all(evidence.score >= evidence.alternative_score)


def test_strongest_peaks_drop_the_beam_and_padding():
    kx = np.array([[0.0, 0.5, 0.3, np.nan]])
    ky = np.array([[0.01, 0.0, 0.4, np.nan]])
    intensity = np.array([[1e6, 4.0, 9.0, 0.0]])
    valid = np.array([[True, True, True, False]])
    px, py, w = strongest_peaks(kx, ky, intensity, valid, beam_radius=0.05, count=3)
    np.testing.assert_allclose(w.numpy(), [[3.0, 2.0, 0.0]])
    np.testing.assert_allclose(px.numpy()[0, :2], [0.3, 0.5], atol=1e-7)


def test_confidence_model_is_calibrated_on_its_own_kind_of_data():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4000, len(FEATURE_NAMES)))
    truth_probability = 1 / (1 + np.exp(-(2 * features[:, 0] - features[:, 1] + 0.5)))
    right = rng.random(4000) < truth_probability
    model = ConfidenceModel.fit(features[:2000], right[:2000])
    x = features[2000:] @ np.asarray(model.coef) + model.intercept
    predicted = 1 / (1 + np.exp(-x))
    for mean_predicted, observed, count in reliability(predicted, right[2000:]):
        assert abs(mean_predicted - observed) < 0.08, (mean_predicted, observed, count)
    again = ConfidenceModel.from_dict(model.to_dict())
    assert again == model
    with pytest.raises(ValueError, match="calibrate again"):
        ConfidenceModel.from_dict(model.to_dict() | {"features": ["score"]})
    with pytest.raises(ValueError, match="both right and wrong"):
        ConfidenceModel.fit(features[:10], np.ones(10, bool))


def test_confidence_probability_reads_evidence():
    model = ConfidenceModel(coef=(8.0, 0, 0, 0, 0, 0, 0, 0, 0), intercept=-4.0)
    n = 3
    evidence = Evidence(score=np.array([0.1, 0.5, 0.9]), alternative_score=np.zeros(n), explained=np.ones(n),
                        complete=np.ones(n), rms=np.zeros(n), matched=np.ones(n))
    p = model.probability(evidence, _decoded(np.repeat(np.eye(3)[None], n, 0)), np.full(n, 5))
    assert p[0] < 0.5 < p[2] and abs(p[1] - 0.5) < 1e-6
    # on a map, the share of neighbours sharing the answer is read too
    on_a_map = ConfidenceModel(coef=(0, 0, 0, 0, 0, 0, 0, 6.0, -1.0), intercept=-2.0)
    p = on_a_map.probability(evidence, _decoded(np.repeat(np.eye(3)[None], n, 0)), np.full(n, 5),
                             support=np.array([0.0, 0.5, 1.0]))
    assert p[0] < p[1] < p[2] and abs(p[1] - 0.5) < 1e-6
    alone = on_a_map.probability(evidence, _decoded(np.repeat(np.eye(3)[None], n, 0)), np.full(n, 5))
    np.testing.assert_allclose(alone, 1 / (1 + np.exp(2.0)), rtol=1e-6)  # no map: support 0, on_a_map 0


def test_repeated_starts_are_refined_once_and_share_the_result():
    from stemkit.orientation.selection import TWIN, _refine_distinct, first_of_same

    cu = crystal("Cu")
    rotation = quaternion_to_matrix(random_quaternions(2, seed=8)).astype(np.float32)
    symmetric = rotation[0] @ cu.point_group.rotations[5].astype(np.float32)  # the same orientation, other matrix
    start = torch.tensor(np.stack([[rotation[0], symmetric, TWIN.numpy() @ rotation[0], rotation[1]]]))
    symmetry = SymmetryTable([cu.point_group])
    assert first_of_same(start, symmetry, 0).tolist() == [[0, 0, 2, 3]]
    peaks = clean_peaks("Cu", rotation[:1].astype(np.float64))
    table = ReflectionTable.of(cu)
    shared, _ = _refine_distinct(*peaks, start, table, symmetry, 0, beam_energy_kev=300.0, settings=RefinementSettings())
    alone = refine_candidates(*peaks, start, table, beam_energy_kev=300.0)
    np.testing.assert_array_equal(shared.rotations[0, 1].numpy(), shared.rotations[0, 0].numpy())
    np.testing.assert_allclose(shared.score[0, [0, 2, 3]].numpy(), alone.score[0, [0, 2, 3]].numpy(), atol=1e-5)
    assert shared.score[0, 1] == shared.score[0, 0]


def test_twins_are_polished_from_their_refined_partners():
    """Each hypothesis is followed, after all of them, by its refined self turned 180° about the beam and polished
    (within a degree of that start); at [111], where the kinematic pattern cannot tell them apart, the twin scores
    as the answer does."""
    from stemkit.orientation.selection import TWIN, _refine_with_twins

    cu = crystal("Cu")
    rotation = zone_axis_rotation(cu, (1, 1, 1))[None]
    peaks = clean_peaks("Cu", rotation, k_max=1.2, thickness=100.0, s_max=0.02)
    hypotheses = torch.stack([perturbed(rotation, 1.5), perturbed(rotation, 3.0, seed=1)], dim=1)
    symmetry = SymmetryTable([cu.point_group])
    refined = _refine_with_twins(*peaks, hypotheses, ReflectionTable.of(cu), symmetry, 0, beam_energy_kev=300.0,
                                 settings=RefinementSettings())
    assert refined.rotations.shape == (1, 4, 3, 3)
    for twin, partner in ((2, 0), (3, 1)):
        turned = TWIN @ refined.rotations[0, partner]
        moved = misorientation_angle(refined.rotations[0, twin].double().numpy()[None], turned.double().numpy()[None],
                                     cu.point_group)[0]
        assert moved < 1.0
    assert abs(float(refined.score[0, 2] - refined.score[0, 0])) < 0.02
