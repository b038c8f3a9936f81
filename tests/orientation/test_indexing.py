"""Peak-pair indexing: the pair library, the Ewald lift, candidates from clean and degraded spots, consensus."""

import numpy as np
import pytest
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.indexing import (
    IndexingSettings,
    PairLibrary,
    _distinct_seconds,
    _strongest_within_budget,
    _family_representatives,
    _library_matches,
    by_consensus,
    index_pairs,
    lift_to_ewald_sphere,
)
from stemkit.orientation.refine import ReflectionTable, excitation_error, refine_candidates
from stemkit.orientation.selection import strongest_peaks
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import axis_angle_to_matrix, misorientation_angle
from stemkit.physics.specimens import zone_axis_rotation

K0 = 1.0 / wavelength_angstrom(300.0)
ZONES = [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 2), (0, 1, 2), (1, 2, 3)]


def near_zone_axes(name: str, count: int, seed: int, tilt_deg: float = 3.0) -> np.ndarray:
    """Orientations a few degrees off low-index zone axes, turned at random about the beam: patterns rich in spots."""
    rng = np.random.default_rng(seed)
    rotations = []
    for index in range(count):
        zone = zone_axis_rotation(crystal(name), ZONES[index % len(ZONES)])
        about_beam = axis_angle_to_matrix(np.array([0.0, 0.0, 1.0]), rng.uniform(0, 360))
        axis = np.array([*rng.normal(size=2), 0.0])
        tilt = axis_angle_to_matrix(axis / np.linalg.norm(axis), rng.uniform(0.5, tilt_deg))
        rotations.append(tilt @ about_beam @ zone)
    return np.asarray(rotations)


def spots(name: str, rotations: np.ndarray, thickness: float = 300.0):
    """Strongest kinematic spots of ``rotations`` as the refinement takes them (sorted, √I weights)."""
    found = simulate_kinematic(crystal(name), rotations, beam_energy_kev=300.0, k_max=1.6, thickness=thickness,
                               s_max=0.05, max_reflections=32, dtype=np.float64)
    return strongest_peaks(found.kx, found.ky, found.intensity, found.valid, beam_radius=0.02)


def best_error(name: str, candidates: torch.Tensor, truth: np.ndarray) -> np.ndarray:
    """The smallest disorientation (°) among each pattern's candidates."""
    group = crystal(name).point_group
    errors = [misorientation_angle(candidates[:, j].double().numpy(), truth, group) for j in range(candidates.shape[1])]
    return np.min(errors, axis=0)


def test_family_representatives_are_one_per_orbit_of_the_point_group():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu, k_max=0.8)  # {111}, {200}, {220}: 8 + 6 + 12 reflections
    g = table.g.double().numpy()
    chosen = _family_representatives(g, cu.point_group)
    lengths = np.round(np.linalg.norm(g[chosen], axis=1), 6)
    assert len(chosen) == 3 and len(set(lengths)) == 3


def test_seconds_related_by_a_rotation_fixing_the_first_are_kept_once():
    cu = crystal("Cu")
    first = np.array([[1.0, 1.0, 1.0]]) / 3.615
    second = np.array([[2.0, 0, 0], [0, 2, 0], [0, 0, 2], [-2, 0, 0], [0, -2, 0], [0, 0, -2]]) / 3.615
    keep = _distinct_seconds(first, second, cu.point_group)[0]
    # the 3-fold axis along [111] turns (200) -> (020) -> (002): one of the three at 54.7°, one at 125.3°
    assert keep.tolist() == [True, False, False, True, False, False]
    # a general first reflection is fixed by the identity only: every second kept
    general = np.array([[1.0, 2.0, 3.0]]) / 3.615
    assert _distinct_seconds(general, second, cu.point_group).all()


def test_a_large_cell_keeps_its_strongest_reflections_within_the_pair_budget():
    ws2 = crystal("WSe2")  # 6/mmm, c = 13 Å: about 2,000 strong reflections out to 2.2 1/Å
    table = ReflectionTable.of(ws2)
    g, amplitude = table.g.double().numpy(), table.amplitude.double().numpy()
    kept = _strongest_within_budget(g, amplitude, ws2.point_group, budget=20_000)
    families = len(_family_representatives(kept, ws2.point_group))
    assert families * len(kept) <= 20_000 < len(_family_representatives(g, ws2.point_group)) * len(g)
    rows = {tuple(np.round(v, 6)) for v in kept}
    was_kept = np.array([tuple(np.round(v, 6)) in rows for v in g])
    assert (amplitude[~was_kept].max() <= amplitude[was_kept].min())  # nothing stronger was left out
    library = PairLibrary.of(table, ws2.point_group)
    assert len(library) <= 40_000


def test_library_pairs_have_the_lengths_and_angles_they_state():
    cu2o = crystal("Cu2O")
    library = PairLibrary.of(ReflectionTable.of(cu2o), cu2o.point_group)
    assert len(library) > 100
    np.testing.assert_allclose(library.first.norm(dim=-1), library.length_first, rtol=1e-5)
    cosine = (library.first * library.second).sum(-1) / (library.length_first * library.length_second)
    np.testing.assert_allclose(torch.arccos(cosine.clamp(-1, 1)), library.angle, atol=1e-3)
    assert float(library.angle.min()) >= np.deg2rad(15.0) - 1e-4
    assert float(library.angle.max()) <= np.deg2rad(165.0) + 1e-4


def test_library_matches_are_every_pair_of_the_right_lengths_and_no_other():
    cu2o = crystal("Cu2O")
    library = PairLibrary.of(ReflectionTable.of(cu2o), cu2o.point_group)
    rng = np.random.default_rng(3)
    first, second = (torch.tensor(rng.uniform(0.2, 1.45, size=(7, 5)), dtype=torch.float32) for _ in range(2))
    half_first, half_second = 0.03 + 0.06 * first, 0.03 + 0.06 * second
    usable = torch.ones(7, 5, dtype=torch.bool)
    usable[2, 3] = False
    measured, entry = _library_matches(library, first, second, half_first, half_second, usable)
    for flat, index in enumerate(np.ndindex(*first.shape)):
        found = entry[measured == flat].tolist()
        assert len(found) == len(set(found))  # each pair once
        if not usable[index]:
            assert found == []
            continue
        expected = torch.nonzero(((library.length_first - first[index]).abs() <= half_first[index])
                                 & ((library.length_second - second[index]).abs() <= half_second[index])).ravel()
        # lengths exactly on a window's edge may fall either way in float32
        assert len(set(found).symmetric_difference(expected.tolist())) <= 1, index
    assert measured.numel() > 100  # the windows are wide: many library pairs fall in them


def test_index_pairs_keeps_the_best_matches_of_the_whole_library():
    """The banded, flat search returns the best costs of comparing each measured pair (both ways round) with every
    library pair."""
    cu = crystal("Cu")
    library = PairLibrary.of(ReflectionTable.of(cu), cu.point_group)
    kx, ky, weight = spots("Cu", near_zone_axes("Cu", 6, seed=4))
    settings = IndexingSettings(candidates=2000)  # every match below the cut, not only the best 12
    _, cost = index_pairs(kx, ky, weight, library, k0=K0, settings=settings)
    q = lift_to_ewald_sphere(kx, ky, K0)
    tolerance = lambda length: settings.length_tolerance + settings.relative_length_tolerance * length  # noqa: E731
    for row in range(len(kx)):
        pairs = []
        for a in range(settings.strongest):
            for b in range(a + 1, settings.strongest):
                cosine = float(q[row, a] @ q[row, b] / (q[row, a].norm() * q[row, b].norm()))
                if weight[row, a] > 0 and weight[row, b] > 0 and abs(cosine) < np.cos(np.deg2rad(15.0)):
                    pairs.append((float(weight[row, a] * weight[row, b]), a, b))
        found = []
        for _, a, b in sorted(pairs, reverse=True)[:settings.pairs]:
            for one, two in ((q[row, a], q[row, b]), (q[row, b], q[row, a])):
                angle = torch.arccos((one @ two / (one.norm() * two.norm())).clamp(-1, 1))
                full = (((one.norm() - library.length_first) / tolerance(one.norm())) ** 2
                        + ((two.norm() - library.length_second) / tolerance(two.norm())) ** 2
                        + ((angle - library.angle) / np.deg2rad(settings.angle_tolerance_deg)) ** 2)
                found += full[full < 9.0].tolist()
        expected = np.sort(found)[:settings.candidates]
        got = cost[row][torch.isfinite(cost[row])].numpy()
        assert 12 < len(expected) < settings.candidates
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_a_lifted_peak_lies_on_the_ewald_sphere():
    kx, ky = torch.tensor([0.3, -1.2, 0.0]), torch.tensor([0.4, 0.9, -1.5])
    q = lift_to_ewald_sphere(kx, ky, K0)
    torch.testing.assert_close(excitation_error(q, K0), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(q[:, :2], torch.stack([kx, ky], -1))


@pytest.mark.parametrize("name", ["Cu", "Cu2O"])
def test_patterns_near_zone_axes_are_indexed_and_refined_to_the_truth(name):
    """Pair matches land near the truth; the consensus keeps it; the refinement polishes it."""
    truth = near_zone_axes(name, 36, seed=3)
    kx, ky, weight = spots(name, truth)
    table = ReflectionTable.of(crystal(name))
    library = PairLibrary.of(table, crystal(name).point_group)
    rotations, cost = index_pairs(kx, ky, weight, library, k0=K0)
    assert np.mean(best_error(name, rotations, truth) < 3.0) >= 0.8
    group = torch.as_tensor(np.array(crystal(name).point_group.rotations), dtype=torch.float32)
    kept = by_consensus(rotations, cost, group, 2)
    refined = refine_candidates(kx, ky, weight, kept, table, beam_energy_kev=300.0)
    assert np.mean(best_error(name, refined.rotations, truth) < 2.0) >= 0.7


def test_indexing_tolerates_a_two_percent_calibration_error():
    """A k-scale off by 2 % (a common calibration error) still gives the orientation."""
    truth = near_zone_axes("Cu", 36, seed=8)
    kx, ky, weight = spots("Cu", truth)
    library = PairLibrary.of(ReflectionTable.of(crystal("Cu")), crystal("Cu").point_group)
    rotations, _ = index_pairs(kx * 1.02, ky * 1.02, weight, library, k0=K0)
    assert np.mean(best_error("Cu", rotations, truth) < 3.0) >= 0.8


def test_patterns_without_usable_pairs_give_no_candidate_and_no_error():
    kx = torch.tensor([[0.5, 0.0, 0.0], [0.5, 1.0, 0.0]])  # one peak; two collinear peaks
    ky = torch.zeros(2, 3)
    weight = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    library = PairLibrary.of(ReflectionTable.of(crystal("Cu")), crystal("Cu").point_group)
    rotations, cost = index_pairs(kx, ky, weight, library, k0=K0, settings=IndexingSettings(candidates=4))
    assert torch.isinf(cost).all()
    torch.testing.assert_close(rotations, torch.eye(3).expand(2, 4, 3, 3))


def test_consensus_prefers_the_orientation_found_most_often():
    group = torch.as_tensor(np.array(crystal("Cu").point_group.rotations), dtype=torch.float32)
    right = torch.as_tensor(near_zone_axes("Cu", 1, seed=1), dtype=torch.float32)[0]
    others = torch.as_tensor(near_zone_axes("Cu", 4, seed=2)[1:], dtype=torch.float32)
    # the right one three times (once as a symmetry-equivalent matrix), three single wrong ones with lower cost
    rotations = torch.stack([others[0], right, others[1], right @ group[5], others[2], right])[None]
    cost = torch.tensor([[0.1, 2.0, 0.1, 2.5, 0.1, 3.0]])
    kept = by_consensus(rotations, cost, group, keep=1)
    assert misorientation_angle(kept[0].double().numpy(), right[None].double().numpy(),
                                crystal("Cu").point_group)[0] < 1e-3
