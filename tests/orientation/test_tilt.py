"""The last polish of an answer's tilt against the disks' amplitudes."""

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.refine import ReflectionTable, excitation_error
from stemkit.orientation import tilt
from stemkit.orientation.tilt import TILT_REACH_DEG, polish_tilt
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import axis_angle_to_matrix, misorientation_angle, quaternion_to_matrix, random_quaternions

K0 = 1.0 / wavelength_angstrom(300.0)


def lorentzian_disks(table: ReflectionTable, rotations: np.ndarray, width: float = 0.004, count: int = 16,
                     position_noise: float = 0.004):
    """Disks whose amplitudes follow the polish's own model exactly: ``|F| / sqrt(1 + (s / width)²)``, the ``count``
    brightest within 1.5 1/Å, at positions measured with ``position_noise`` (1/Å; weights the amplitudes). At
    that noise the positions alone cannot fix the tilt."""
    g_lab = torch.einsum("bij,nj->bni", torch.tensor(rotations, dtype=torch.float32), table.g)
    s = excitation_error(g_lab, K0)
    amplitude = table.amplitude / torch.sqrt(1.0 + (s / width) ** 2)
    amplitude = torch.where(g_lab[..., :2].norm(dim=-1) < 1.5, amplitude, torch.zeros_like(amplitude))
    brightest = amplitude.topk(count, dim=-1).indices
    take = lambda values: torch.gather(values, 1, brightest)  # noqa: E731
    noise = torch.randn(2, *brightest.shape, generator=torch.Generator().manual_seed(7)) * position_noise
    return take(g_lab[..., 0]) + noise[0], take(g_lab[..., 1]) + noise[1], take(amplitude)


def tilted(rotations: np.ndarray, degrees: float, seed: int) -> torch.Tensor:
    """``rotations`` turned by ``degrees`` about a random axis normal to the beam."""
    rng = np.random.default_rng(seed)
    out = []
    for rotation in rotations:
        phi = rng.uniform(0, 2 * np.pi)
        out.append(axis_angle_to_matrix(np.array([np.cos(phi), np.sin(phi), 0.0]), degrees) @ rotation)
    return torch.tensor(np.array(out), dtype=torch.float32)


def test_the_polish_finds_the_tilt_of_disks_that_follow_its_model():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    truth = quaternion_to_matrix(random_quaternions(24, seed=11))
    kx, ky, weight = lorentzian_disks(table, truth)
    start = tilted(truth, 0.6, seed=1)
    polished = polish_tilt(kx, ky, weight, start, table, beam_energy_kev=300.0)
    before = misorientation_angle(start.double().numpy(), truth, cu.point_group)
    after = misorientation_angle(polished.double().numpy(), truth, cu.point_group)
    assert np.median(before) > 0.55
    assert np.median(after) < 0.15


def test_the_polish_only_tilts_and_only_so_far():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    truth = quaternion_to_matrix(random_quaternions(16, seed=12))
    kx, ky, weight = lorentzian_disks(table, truth)
    start = tilted(truth, 3.0, seed=2)  # beyond the search's reach: it moves as far as it can, no further
    polished = polish_tilt(kx, ky, weight, start, table, beam_energy_kev=300.0).double().numpy()
    turn = polished @ np.transpose(start.double().numpy(), (0, 2, 1))  # polished = turn @ start
    assert np.all(misorientation_angle(polished, start.double().numpy()) <= TILT_REACH_DEG * np.sqrt(2) + 1e-3)
    # a rotation about an axis normal to the beam moves the beam's direction only within the plane it spans
    axis = np.stack([turn[:, 2, 1] - turn[:, 1, 2], turn[:, 0, 2] - turn[:, 2, 0], turn[:, 1, 0] - turn[:, 0, 1]], 1)
    moved = np.linalg.norm(axis, axis=1) > 1e-6
    assert np.all(np.abs(axis[moved, 2]) / np.linalg.norm(axis[moved], axis=1) < 0.02)


def test_answers_with_too_few_disks_are_left_alone():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    truth = quaternion_to_matrix(random_quaternions(4, seed=13))
    kx, ky, weight = lorentzian_disks(table, truth, count=2)
    start = tilted(truth, 0.6, seed=3)
    polished = polish_tilt(kx, ky, weight, start, table, beam_energy_kev=300.0)
    np.testing.assert_array_equal(polished.numpy(), start.numpy())
    empty = torch.zeros(4, 24)
    np.testing.assert_array_equal(polish_tilt(empty, empty, empty, start, table, beam_energy_kev=300.0).numpy(), start.numpy())


def test_the_search_does_not_depend_on_how_patterns_are_grouped(monkeypatch):
    # patterns are searched in groups cut to their own largest disk count: cutting the padding changes nothing
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    truth = quaternion_to_matrix(random_quaternions(12, seed=14))
    kx, ky, weight = lorentzian_disks(table, truth)
    weight[::3, 8:] = 0.0  # some patterns with fewer disks than others
    start = tilted(truth, 0.5, seed=4)
    monkeypatch.setattr(tilt, "SEARCH_GROUP", 1)
    one_by_one = polish_tilt(kx, ky, weight, start, table, beam_energy_kev=300.0)
    monkeypatch.setattr(tilt, "SEARCH_GROUP", 4096)
    all_at_once = polish_tilt(kx, ky, weight, start, table, beam_energy_kev=300.0)
    np.testing.assert_allclose(one_by_one.numpy(), all_at_once.numpy(), atol=1e-6)


def six_exact_patterns(seed: int):
    """Cu's table, six random orientations and their six brightest disks, positions exact."""
    table = ReflectionTable.of(crystal("Cu"))
    truth = quaternion_to_matrix(random_quaternions(6, seed=seed))
    kx, ky, weight = lorentzian_disks(table, truth, count=6, position_noise=0.0)
    return table, truth, torch.tensor(truth, dtype=torch.float32), kx, ky, weight


def test_dark_reflections_are_the_unmatched_ones_nearest_the_ewald_sphere():
    table, truth, rotations, kx, ky, weight = six_exact_patterns(seed=15)
    disks = tilt._matched(torch.stack([kx, ky], -1), weight, rotations, table, K0, tilt.RefinementSettings())
    for pattern in range(len(truth)):
        seen = {tuple(np.round(v, 4)) for v in disks.g[pattern][disks.measured[pattern] > 0].numpy()}
        dark = disks.absent_g[pattern][disks.absent_structure[pattern] > 0]
        assert len(dark) > 0
        lab = dark @ rotations[pattern].T
        lateral = lab[:, :2].norm(dim=-1)
        assert torch.all(lateral > tilt.DIRECT_BEAM_CLEARANCE)
        assert not any(tuple(np.round(v, 4)) in seen for v in dark.numpy())
        # nearer the Ewald sphere than the reflections of the table left out (within the same reach)
        reach = float(tilt.peak_reach(kx[pattern:pattern + 1], ky[pattern:pattern + 1], weight[pattern:pattern + 1]))
        all_lab = table.g @ rotations[pattern].T
        candidates = (all_lab[:, :2].norm(dim=-1) <= reach) & (all_lab[:, :2].norm(dim=-1) > tilt.DIRECT_BEAM_CLEARANCE)
        s_all = np.sort(excitation_error(all_lab[candidates], K0).abs().numpy())
        assert excitation_error(lab, K0).abs().max() <= s_all[len(dark) + 6 + 1] + 1e-6


def test_a_reflection_predicted_bright_but_not_seen_costs():
    # one seen disk at the Bragg condition; a dark reflection that one trial puts at the Bragg condition too
    g = torch.tensor([[[0.5, 0.0, 0.0]]])
    dark_g = torch.tensor([[[0.0, 0.5, 0.0]]])
    disks = tilt._Disks(points=torch.tensor([[[0.5, 0.0]]]), g=g, structure=torch.ones(1, 1),
                        measured=torch.ones(1, 1), absent_g=dark_g, absent_structure=torch.ones(1, 1),
                        floor=torch.tensor([0.2]))
    trials = tilt._tilt_grid(0.5, 2)[None].float()  # 25 small tilts: some bring the dark reflection to s = 0
    with_dark = tilt._tilt_cost(disks, trials, K0, 0.008)
    without = tilt._tilt_cost(tilt._Disks(**{**vars(disks), "absent_structure": torch.zeros(1, 1)}), trials, K0, 0.008)
    assert torch.all(with_dark >= without - 1e-3)  # a one-sided penalty: it never helps
    assert torch.any(with_dark > without + 1.0)


def test_reflections_off_the_detector_are_not_dark():
    table, _, rotations, kx, ky, weight = six_exact_patterns(seed=16)
    points = torch.stack([kx, ky], -1)
    everywhere = tilt._matched(points, weight, rotations, table, K0, tilt.RefinementSettings())
    field = torch.tensor([[-0.3, 1.5, -1.5, 1.5]]).expand(6, 4)  # a detector that ends 0.3 1/Å left of the beam
    on_detector = tilt._matched(points, weight, rotations, table, K0, tilt.RefinementSettings(), field=field)
    for disks in (everywhere, on_detector):
        assert (disks.absent_structure > 0).sum() > 0
    dark = on_detector.absent_g[on_detector.absent_structure > 0]
    lab_x = torch.einsum("bij,bqj->bqi", rotations, on_detector.absent_g)[..., 0][on_detector.absent_structure > 0]
    assert torch.all(lab_x >= -0.3) and len(dark) > 0
    lab_everywhere = torch.einsum("bij,bqj->bqi", rotations, everywhere.absent_g)[..., 0]
    assert torch.any(lab_everywhere[everywhere.absent_structure > 0] < -0.3)  # the field did leave some out
