"""The last polish of an answer's tilt against the disks' amplitudes."""

import numpy as np
import torch

from stemkit.data.units import wavelength_angstrom
from stemkit.orientation.refine import ReflectionTable, excitation_error
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
