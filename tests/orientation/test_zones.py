"""Answers whose 180°-about-the-beam twin the pattern cannot rule out: bright disks in one zone."""

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.decode import Decoded
from stemkit.orientation.loss import SymmetryTable
from stemkit.orientation.refine import ReflectionTable, excitation_error
from stemkit.orientation.selection import TWIN, Evidence
from stemkit.orientation.zones import CORE_S, ZONE_AMBIGUITY_RATIO, flag_zone_twins, one_zone
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import axis_angle_to_matrix, quaternion_to_matrix, random_quaternions
from stemkit.physics.specimens import zone_axis_rotation

K0 = 1.0 / wavelength_angstrom(300.0)


def bright_disks(table: ReflectionTable, rotations: np.ndarray, s_max: float = 0.02, count: int = 12):
    """Peaks at the reflections within ``s_max`` of the Bragg condition and 1.5 1/Å of the beam (the ``count``
    strongest, weights ``|F|``), as ``strongest_peaks`` gives them."""
    g_lab = torch.einsum("bij,nj->bni", torch.tensor(rotations, dtype=torch.float32), table.g)
    lateral = g_lab[..., :2].norm(dim=-1)
    near = (excitation_error(g_lab, K0).abs() < s_max) & (lateral < 1.5) & (lateral > 0.1)
    amplitude = torch.where(near, table.amplitude, torch.zeros_like(table.amplitude))
    brightest = amplitude.topk(count, dim=-1).indices
    take = lambda values: torch.gather(values, 1, brightest)  # noqa: E731
    return take(g_lab[..., 0]), take(g_lab[..., 1]), take(amplitude)


def best_twin_mismatch(rotation: np.ndarray, g: np.ndarray) -> float:
    """The largest difference of excitation error between the reflections ``g`` (crystal frame) of ``rotation`` and
    the reflections the twin puts at their spots (``-g``: same ``|F|``), the twin turned by the best small tilt
    (least squares over tilts about the lab x and y axes)."""
    def s_of(r, vectors):
        return excitation_error(torch.tensor(vectors @ r.T), K0).numpy()

    target, twin = s_of(rotation, g), TWIN.double().numpy() @ rotation
    step = 1e-4
    base = s_of(twin, -g)
    jacobian = np.stack([(s_of(axis_angle_to_matrix(axis, np.degrees(step)) @ twin, -g) - base) / step
                         for axis in (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))], axis=1)
    tilt, *_ = np.linalg.lstsq(jacobian, target - base, rcond=None)
    return float(np.abs(base + jacobian @ tilt - target).max())


def test_near_a_zone_axis_the_twin_explains_the_bright_disks_and_the_answer_is_one_zone():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    rotations = np.stack([axis_angle_to_matrix(np.array([np.cos(a), np.sin(a), 0.0]), 0.5) @ zone_axis_rotation(cu, uvw)
                          for a, uvw in [(0.3, (1, 1, 1)), (1.2, (1, 1, 2)), (2.0, (1, 2, 3))]])
    kx, ky, weight = bright_disks(table, rotations)
    assert bool(one_zone(kx, ky, weight, torch.tensor(rotations, dtype=torch.float32), table,
                         beam_energy_kev=300.0).all())
    for rotation, x, y, w in zip(rotations, kx.numpy(), ky.numpy(), weight.numpy()):  # the physics: a tilted twin fits
        g = table.g.numpy() @ rotation.T
        nearest = np.argmin(((g[None, :, :2] - np.stack([x, y], 1)[:, None]) ** 2).sum(-1), axis=1)[w > 0]
        assert len(nearest) >= 4
        assert best_twin_mismatch(rotation, table.g.numpy()[nearest].astype(np.float64)) < 0.002


def test_the_twin_explains_the_bright_disks_exactly_where_they_lie_in_one_zone():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    rotations = quaternion_to_matrix(random_quaternions(64, seed=5))
    kx, ky, weight = bright_disks(table, rotations)
    zone = one_zone(kx, ky, weight, torch.tensor(rotations, dtype=torch.float32), table, beam_energy_kev=300.0).numpy()
    several = ~zone & ((weight > 0).sum(-1) >= 3).numpy()  # bright disks in more than one zone
    assert zone.sum() > 0 and several.sum() > 0
    mismatch = []
    for rotation, x, y, w in zip(rotations, kx.numpy(), ky.numpy(), weight.numpy()):
        g = table.g.numpy() @ rotation.T
        nearest = np.argmin(((g[None, :, :2] - np.stack([x, y], 1)[:, None]) ** 2).sum(-1), axis=1)[w > 0]
        mismatch.append(best_twin_mismatch(rotation, table.g.numpy()[nearest].astype(np.float64)))
    mismatch = np.array(mismatch)
    assert np.all(mismatch[zone] < CORE_S / 3)  # one zone: the tilted twin excites every bright disk as the answer
    assert np.all(mismatch[several] > CORE_S)  # several: the twin leaves some far from the Bragg condition


def test_too_few_bright_disks_make_no_zone():
    cu = crystal("Cu")
    table = ReflectionTable.of(cu)
    rotations = quaternion_to_matrix(random_quaternions(4, seed=6))
    kx, ky, weight = bright_disks(table, rotations, count=1)
    assert not one_zone(kx, ky, weight, torch.tensor(rotations, dtype=torch.float32), table,
                        beam_energy_kev=300.0).any()


def answers_with_twins(scores: np.ndarray, alternative_scores: np.ndarray, twin: np.ndarray):
    """Cu answers whose alternative is their twin (``twin`` True) or an unrelated orientation."""
    n = len(scores)
    rotation = quaternion_to_matrix(random_quaternions(n, seed=9))
    unrelated = quaternion_to_matrix(random_quaternions(n, seed=10))
    alternative = np.where(twin[:, None, None], TWIN.double().numpy() @ rotation, unrelated)
    decoded = Decoded(rotation=rotation, alternative=alternative, confidence=np.ones(n), alternative_weight=np.zeros(n),
                      separation_deg=np.full(n, 60.0), ambiguous=np.zeros(n, bool), phase=np.zeros(n, int),
                      phase_probability=np.ones(n))
    evidence = Evidence(score=scores, alternative_score=alternative_scores, explained=np.ones(n), complete=np.ones(n),
                        rms=np.zeros(n), matched=np.full(n, 8))
    return decoded, evidence


def test_one_zone_answers_are_flagged_only_with_their_twin_close_behind():
    ratio = ZONE_AMBIGUITY_RATIO
    scores = np.full(5, 0.8)
    alternative = 0.8 * np.array([ratio + 0.05, ratio + 0.05, ratio - 0.05, ratio + 0.05, ratio + 0.05])
    decoded, evidence = answers_with_twins(scores, alternative, twin=np.array([True, True, True, False, True]))
    zone = np.array([True, False, True, True, True])
    decoded.ambiguous[4] = True  # flagged already: stays so
    symmetry = SymmetryTable([crystal("Cu").point_group])
    before = decoded.ambiguous.copy()
    flagged = flag_zone_twins(decoded, evidence, zone, symmetry)
    np.testing.assert_array_equal(flagged.ambiguous, [True, False, False, False, True])
    np.testing.assert_array_equal(decoded.ambiguous, before)  # the input is not modified
    np.testing.assert_array_equal(flagged.alternative, decoded.alternative)
