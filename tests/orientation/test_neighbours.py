"""Neighbours' orientations offered to doubtful patterns: adopted where the pattern's own peaks prefer them, only there."""

import numpy as np
import pytest
import torch

from stemkit.orientation.decode import Decoded
from stemkit.orientation.loss import SymmetryTable
from stemkit.orientation.metrics import disorientation_deg
from stemkit.orientation.neighbours import NeighbourSettings, neighbour_table, offer_neighbours
from stemkit.orientation.refine import ReflectionTable, refine_candidates
from stemkit.orientation.selection import Evidence
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import quaternion_to_matrix, random_quaternions

from test_refine import clean_peaks

PHASES = ("Cu", "Cu2O")
ENERGY = 300.0


@pytest.fixture(scope="module")
def tables():
    return [ReflectionTable.of(crystal(name)) for name in PHASES]


@pytest.fixture(scope="module")
def symmetry():
    return SymmetryTable([crystal(name).point_group for name in PHASES])


def refined_answers(peaks, rotations: np.ndarray, phases: np.ndarray, tables) -> tuple[Decoded, Evidence]:
    """Each pattern's given rotation refined in its given phase, as ``select`` would leave it (no alternative)."""
    n = len(rotations)
    out = {name: np.zeros(n) for name in ("score", "explained", "complete", "rms", "matched")}
    refined_rotations = np.zeros((n, 3, 3))
    for index, table in enumerate(tables):
        rows = np.flatnonzero(phases == index)
        if rows.size:
            refined = refine_candidates(*(p[rows] for p in peaks), torch.tensor(rotations[rows], dtype=torch.float32)[:, None],
                                        table, beam_energy_kev=ENERGY)
            refined_rotations[rows] = refined.rotations[:, 0].double().numpy()
            for name in out:
                out[name][rows] = getattr(refined, name)[:, 0].double().numpy()
    decoded = Decoded(rotation=refined_rotations, alternative=refined_rotations.copy(), confidence=np.ones(n),
                      alternative_weight=np.zeros(n), separation_deg=np.zeros(n), ambiguous=np.zeros(n, bool),
                      phase=phases.copy(), phase_probability=np.full(n, 0.9))
    evidence = Evidence(score=out["score"], alternative_score=np.zeros(n), explained=out["explained"],
                        complete=out["complete"], rms=out["rms"], matched=out["matched"])
    return decoded, evidence


def scan_of(peaks_per_pattern):
    """Stack per-pattern peak tuples into ``(n, P)`` tensors, padded with zero weight."""
    width = max(p[0].shape[1] for p in peaks_per_pattern)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    return tuple(torch.cat([pad(p[i]) for p in peaks_per_pattern]) for i in range(3))


def test_the_neighbour_table_lists_each_patterns_eight_neighbours_and_marks_the_edge():
    table = neighbour_table((3, 4), radius=1)
    assert table.shape == (12, 8)
    assert sorted(table[5]) == [0, 1, 2, 4, 6, 8, 9, 10]  # pattern (1, 1)
    assert sorted(table[0][table[0] >= 0]) == [1, 4, 5] and (table[0] == -1).sum() == 5
    assert neighbour_table((2, 2), radius=2).shape == (4, 24)


def test_a_lone_wrong_answer_in_a_grain_takes_the_grains_orientation_and_phase(tables, symmetry):
    grain = quaternion_to_matrix(random_quaternions(1, seed=11))
    peaks = scan_of([clean_peaks("Cu2O", grain)] * 9)
    wrong = quaternion_to_matrix(random_quaternions(1, seed=12))
    rotations = np.repeat(grain, 9, axis=0)
    rotations[4] = wrong[0]
    phases = np.array([1] * 9)
    phases[4] = 0  # the centre read as Cu, in a wrong orientation
    decoded, evidence = refined_answers(peaks, rotations, phases, tables)
    before = evidence.score.copy()

    new, new_evidence, adopted = offer_neighbours(decoded, evidence, (3, 3), lambda i: tuple(p[i] for p in peaks),
                                                  tables, symmetry, beam_energy_kev=ENERGY)
    assert adopted.tolist() == [False] * 4 + [True] + [False] * 4
    assert new.phase[4] == 1 and new.phase_probability[4] == pytest.approx(0.1)
    assert disorientation_deg(new.rotation[4:5], grain, np.array([0]), [crystal("Cu2O").point_group])[0] < 1.0
    assert new_evidence.score[4] > before[4]
    np.testing.assert_array_equal(evidence.score, before)  # the inputs are left as they were
    assert decoded.phase[4] == 0
    # the replaced answer is of another phase: it cannot be the alternative
    np.testing.assert_array_equal(new.alternative[4], new.rotation[4])
    assert not new.ambiguous[4] and new_evidence.alternative_score[4] == 0


def test_a_replaced_answer_of_the_same_phase_becomes_the_alternative(tables, symmetry):
    grain = quaternion_to_matrix(random_quaternions(1, seed=21))
    peaks = scan_of([clean_peaks("Cu", grain)] * 9)
    rotations = np.repeat(grain, 9, axis=0)
    rotations[4] = quaternion_to_matrix(random_quaternions(1, seed=22))[0]
    decoded, evidence = refined_answers(peaks, rotations, np.zeros(9, int), tables)
    old_score = evidence.score[4]
    new, new_evidence, adopted = offer_neighbours(decoded, evidence, (3, 3), lambda i: tuple(p[i] for p in peaks),
                                                  tables, symmetry, beam_energy_kev=ENERGY)
    assert adopted[4] and old_score > 0  # the wrong answer explained a little of the pattern
    np.testing.assert_allclose(new.alternative[4], decoded.rotation[4])
    assert new_evidence.alternative_score[4] == pytest.approx(old_score)
    assert new.separation_deg[4] > 5.0


def test_a_small_grain_of_its_own_keeps_its_answer(tables, symmetry):
    grain, own = quaternion_to_matrix(random_quaternions(2, seed=31))
    peaks = scan_of([clean_peaks("Cu", grain[None])] * 4 + [clean_peaks("Cu", own[None])] + [clean_peaks("Cu", grain[None])] * 4)
    rotations = np.repeat(grain[None], 9, axis=0)
    rotations[4] = own
    decoded, evidence = refined_answers(peaks, rotations, np.zeros(9, int), tables)
    new, _, adopted = offer_neighbours(decoded, evidence, (3, 3), lambda i: tuple(p[i] for p in peaks),
                                       tables, symmetry, beam_energy_kev=ENERGY)
    assert not adopted.any()
    np.testing.assert_array_equal(new.rotation, decoded.rotation)


def test_no_sweeps_change_nothing_and_bad_settings_are_refused(tables, symmetry):
    grain = quaternion_to_matrix(random_quaternions(1, seed=41))
    peaks = scan_of([clean_peaks("Cu", grain)] * 4)
    decoded, evidence = refined_answers(peaks, np.repeat(grain, 4, axis=0), np.zeros(4, int), tables)
    _, _, adopted = offer_neighbours(decoded, evidence, (2, 2), lambda i: tuple(p[i] for p in peaks), tables, symmetry,
                                     beam_energy_kev=ENERGY, settings=NeighbourSettings(sweeps=0))
    assert not adopted.any()
    with pytest.raises(ValueError, match="offer_neighbours got 4 answers for a scan of"):
        offer_neighbours(decoded, evidence, (3, 3), lambda i: tuple(p[i] for p in peaks), tables, symmetry,
                         beam_energy_kev=ENERGY)
    with pytest.raises(ValueError, match="radius >= 1"):
        NeighbourSettings(radius=0)


def test_an_ambiguous_pattern_takes_the_alternative_its_neighbours_share(tables, symmetry):
    from stemkit.orientation.selection import TWIN

    grain = quaternion_to_matrix(random_quaternions(1, seed=51))
    peaks = scan_of([clean_peaks("Cu", grain)] * 9)
    rotations = np.repeat(grain, 9, axis=0)
    rotations[4] = TWIN.double().numpy() @ grain[0]  # the centre answered with the grain's 180° twin ...
    decoded, evidence = refined_answers(peaks, rotations, np.zeros(9, int), tables)
    decoded.alternative[4], decoded.ambiguous[4] = grain[0], True  # ... and a coin flip against the truth
    evidence.alternative_score[4] = evidence.score[4]
    twin_answer = decoded.rotation[4].copy()
    group = [crystal("Cu").point_group]
    new, new_evidence, adopted = offer_neighbours(decoded, evidence, (3, 3), lambda i: tuple(p[i] for p in peaks),
                                                  tables, symmetry, beam_energy_kev=ENERGY,
                                                  settings=NeighbourSettings(sweeps=0))
    assert not adopted.any()  # no offers: the tie was broken by the neighbours, not by a new candidate
    assert disorientation_deg(new.rotation[4:5], grain, np.array([0]), group)[0] < 1.0
    np.testing.assert_array_equal(new.alternative[4], twin_answer)
    assert new_evidence.alternative_score[4] == evidence.score[4]
    untouched = NeighbourSettings(sweeps=0, break_ties=False)
    same, _, _ = offer_neighbours(decoded, evidence, (3, 3), lambda i: tuple(p[i] for p in peaks), tables, symmetry,
                                  beam_energy_kev=ENERGY, settings=untouched)
    np.testing.assert_array_equal(same.rotation, decoded.rotation)


def test_patterns_whose_neighbours_split_between_an_orientation_and_its_twin_are_flagged(tables, symmetry):
    from stemkit.orientation.selection import TWIN

    grain = quaternion_to_matrix(random_quaternions(1, seed=61))
    peaks = scan_of([clean_peaks("Cu", grain)] * 25)
    twin = TWIN.double().numpy() @ grain[0]
    checkerboard = (np.add.outer(np.arange(5), np.arange(5)) % 2).ravel().astype(bool)
    rotations = np.where(checkerboard[:, None, None], twin, grain[0])
    decoded, evidence = refined_answers(peaks, rotations, np.zeros(25, int), tables)
    only_twins = NeighbourSettings(sweeps=0, break_ties=False)
    new, new_evidence, _ = offer_neighbours(decoded, evidence, (5, 5), lambda i: tuple(p[i] for p in peaks), tables,
                                            symmetry, beam_energy_kev=ENERGY, settings=only_twins)
    assert new.ambiguous.all()
    group = [crystal("Cu").point_group]
    answer_right = disorientation_deg(new.rotation, np.repeat(grain, 25, 0), np.zeros(25, int), group) < 5
    alternative_right = disorientation_deg(new.alternative, np.repeat(grain, 25, 0), np.zeros(25, int), group) < 5
    assert (answer_right | alternative_right).all() and (answer_right == ~checkerboard).all()
    assert (new_evidence.alternative_score > 0).all() and (new.separation_deg > 5).all()
    # one grain that agrees with itself is not flagged, and nor is a 4-fold zone axis, whose twin is itself
    whole, whole_evidence = refined_answers(peaks, np.repeat(grain, 25, 0), np.zeros(25, int), tables)
    same, _, _ = offer_neighbours(whole, whole_evidence, (5, 5), lambda i: tuple(p[i] for p in peaks), tables, symmetry,
                                  beam_energy_kev=ENERGY, settings=only_twins)
    assert not same.ambiguous.any()
    axis = np.eye(3)[None]  # [001] along the beam: 180 deg about it is a symmetry of the cubic crystal
    on_axis = scan_of([clean_peaks("Cu", axis)] * 25)
    flipped = np.where(checkerboard[:, None, None], TWIN.double().numpy() @ axis[0], axis[0])
    decoded, evidence = refined_answers(on_axis, flipped, np.zeros(25, int), tables)
    new, _, _ = offer_neighbours(decoded, evidence, (5, 5), lambda i: tuple(p[i] for p in on_axis), tables, symmetry,
                                 beam_energy_kev=ENERGY, settings=only_twins)
    assert not new.ambiguous.any()


def test_neighbour_support_is_the_share_of_neighbours_with_the_same_answer(tables, symmetry):
    from stemkit.orientation.neighbours import neighbour_support

    grain, other = quaternion_to_matrix(random_quaternions(2, seed=71))
    rotations = np.repeat(grain[None], 9, axis=0)
    rotations[[0, 4]] = other  # a corner and the centre differ
    decoded = Decoded(rotation=rotations, alternative=rotations.copy(), confidence=np.ones(9),
                      alternative_weight=np.zeros(9), separation_deg=np.zeros(9), ambiguous=np.zeros(9, bool),
                      phase=np.zeros(9, int), phase_probability=np.ones(9))
    answered = np.ones(9, bool)
    answered[8] = False  # a pattern without an answer counts for nobody
    support = neighbour_support(decoded, answered, (3, 3), symmetry)
    np.testing.assert_allclose(support[4], 1 / 7)  # the centre: 7 answered neighbours, the corner shares its answer
    np.testing.assert_allclose(support[0], 1 / 3)  # the corner: neighbours 1, 3 and 4; only 4 agrees
    np.testing.assert_allclose(support[1], 3 / 5)  # 0, 2, 3, 4, 5: agree 2, 3, 5
    assert support[8] == 0.0
