"""The SVD rotation head gives proper rotations; the symmetric loss is the crystallographic misorientation."""

import numpy as np
import pytest
import torch

from stemkit.orientation import SymmetryTable, rotation_from_9d, symmetric_geodesic
from stemkit.physics import PointGroup, misorientation_angle, quaternion_to_matrix, random_quaternions

GROUPS = ["m-3m", "6/mmm", "mmm", "-3m", "4/mmm"]


def random_rotations(n, seed):
    return torch.as_tensor(quaternion_to_matrix(random_quaternions(n, seed=seed)), dtype=torch.float32)


def test_head_returns_proper_rotations():
    outputs = torch.randn(500, 9, generator=torch.Generator().manual_seed(0))
    rotations = rotation_from_9d(outputs)
    eye = torch.eye(3).expand(500, 3, 3)
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.det(rotations), torch.ones(500), atol=1e-5, rtol=0)


def test_head_keeps_a_rotation_and_is_differentiable():
    rotations = random_rotations(20, 1)
    torch.testing.assert_close(rotation_from_9d(rotations.reshape(20, 9)), rotations, atol=1e-5, rtol=0)
    outputs = torch.randn(8, 9, requires_grad=True)
    rotation_from_9d(outputs).sum().backward()
    assert torch.isfinite(outputs.grad).all()
    with pytest.raises(ValueError, match="9 outputs"):
        rotation_from_9d(torch.zeros(3, 6))


@pytest.mark.parametrize("name", GROUPS)
def test_loss_is_invariant_under_the_point_group(name):
    group = PointGroup.from_name(name)
    table = SymmetryTable([group])
    predicted, true = random_rotations(64, 2), random_rotations(64, 3)
    reference = symmetric_geodesic(predicted, true, table)
    for s in group.rotations:
        moved = true @ torch.tensor(s, dtype=torch.float32)
        torch.testing.assert_close(symmetric_geodesic(predicted, moved, table), reference, atol=2e-3, rtol=0)


@pytest.mark.parametrize("name", GROUPS)
def test_loss_equals_the_misorientation_angle(name):
    group = PointGroup.from_name(name)
    q1, q2 = random_quaternions(200, seed=4), random_quaternions(200, seed=5)
    expected = misorientation_angle(q1, q2, group)
    predicted = torch.as_tensor(quaternion_to_matrix(q1), dtype=torch.float64)
    true = torch.as_tensor(quaternion_to_matrix(q2), dtype=torch.float64)
    got = np.rad2deg(symmetric_geodesic(predicted, true, SymmetryTable([group])).numpy())
    np.testing.assert_allclose(got, expected, atol=0.2)
    assert expected.max() <= {"m-3m": 62.8, "6/mmm": 93.9, "mmm": 120.0, "-3m": 104.5, "4/mmm": 98.5}[name] + 0.1


def test_each_sample_uses_its_own_phase():
    cubic, hexagonal = PointGroup.from_name("m-3m"), PointGroup.from_name("6/mmm")
    table = SymmetryTable([cubic, hexagonal])
    true = random_rotations(2, 6)
    four_fold = torch.as_tensor(quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]), dtype=torch.float32)
    predicted = true @ four_fold.T  # 90° about the crystal's z axis
    angles = np.rad2deg(symmetric_geodesic(predicted, true, table, torch.tensor([0, 1])).numpy())
    assert angles[0] < 0.2, "90° about [001] is a symmetry of the cubic phase"
    assert abs(angles[1] - 30.0) < 0.2, "but 30° away from the nearest 60° rotation of the hexagonal one"


def test_gradient_is_finite_at_zero_and_drives_the_prediction_home():
    table = SymmetryTable([PointGroup.from_name("m-3m")])
    true = random_rotations(4, 7)
    outputs = true.reshape(4, 9).clone().requires_grad_(True)
    symmetric_geodesic(rotation_from_9d(outputs), true, table).sum().backward()
    assert torch.isfinite(outputs.grad).all()
    outputs = torch.randn(4, 9, generator=torch.Generator().manual_seed(8)).requires_grad_(True)
    optimiser = torch.optim.Adam([outputs], lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        loss = symmetric_geodesic(rotation_from_9d(outputs), true, table).mean()
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < np.deg2rad(1.0)


def test_head_gradient_matches_finite_differences():
    """Including matrices with negative determinant (the special-orthogonal flip)."""
    generator = torch.Generator().manual_seed(9)
    outputs = torch.randn(6, 9, dtype=torch.float64, generator=generator)
    outputs[0] = -outputs[0]
    assert torch.autograd.gradcheck(rotation_from_9d, (outputs.requires_grad_(True),), eps=1e-6, atol=1e-5)
