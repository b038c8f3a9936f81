"""Symmetry orders, rotation unwrapping and the reference rules."""

import numpy as np
import pytest

from stemkit.physics.specimens import deformation_gradient
from stemkit.strain.polar import rotation_matrix
from stemkit.strain.reference import automatic_reference, reference_window, strain_fields
from stemkit.strain.symmetry import align_branch, lattice_symmetry_order, pattern_symmetry_order, wrap_rotation

HEX = np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]])


@pytest.mark.parametrize("basis, order", [(HEX, 6), (np.eye(2), 4), (np.diag([1.0, 1.4]), 2),
                                          (np.diag([1.02, 0.99]) @ HEX, 6), (rotation_matrix(17.0) @ np.eye(2), 4)])
def test_lattice_symmetry_order(basis, order):
    assert lattice_symmetry_order(basis) == order


def spots_image(basis: np.ndarray, size: int = 81) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size // 2
    image = np.zeros((size, size))
    for h in range(-4, 5):
        for k in range(-4, 5):
            if h == k == 0:
                continue
            gx, gy = basis @ [h, k]
            image += np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / 4.0)
    return image


@pytest.mark.parametrize("basis, order", [(9.0 * HEX, 6), (10.0 * np.eye(2), 4), (np.diag([9.0, 13.0]), 2)])
def test_pattern_symmetry_order(basis, order):
    assert pattern_symmetry_order(spots_image(basis)) == order


def test_wrap_rotation_by_hand():
    np.testing.assert_allclose(wrap_rotation([61.0, -59.0, 30.0, -30.0, 95.0], 6), [1.0, 1.0, 30.0, 30.0, -25.0])
    np.testing.assert_allclose(wrap_rotation([91.0, 181.0], 2), [-89.0, 1.0])


def test_align_branch_keeps_the_stretch_and_turns_by_symmetry():
    f = deformation_gradient(0.02, -0.01, 0.004, 2.0)
    other = f @ rotation_matrix(120.0)  # the same lattice measured on another branch of a 6-fold lattice
    np.testing.assert_allclose(align_branch(other, 6, 0.0), f, atol=1e-12)


def test_automatic_reference_picks_the_uniform_window_of_the_dominant_group():
    rng = np.random.default_rng(0)
    f = np.eye(2) + 0.01 * rng.normal(size=(24, 24, 2, 2))
    f[12:20, 2:10] = np.eye(2)  # a perfectly uniform 8×8 region
    groups = np.zeros((24, 24), int)
    groups[:, 20:] = 1
    assert reference_window((24, 24)) == 6 and reference_window((8, 9)) == 3 and reference_window((200, 90)) == 16
    mask = automatic_reference(f, groups)
    assert mask.sum() == 36 and mask[12:20, 2:10].sum() == 36


def test_automatic_reference_avoids_a_minority_group():
    f = np.broadcast_to(np.eye(2), (16, 16, 2, 2)).copy()
    groups = np.zeros((16, 16), int)
    groups[:, :6] = 1  # the minority is perfectly uniform too, but not dominant
    f[:, 6:] += 0.001 * np.arange(10)[None, :, None, None]
    mask = automatic_reference(f, groups)
    assert mask.any() and not mask[:, :6].any()


def test_strain_fields_relative_to_a_given_reference_with_branches_unwrapped():
    truth = deformation_gradient(0.01, 0.0, 0.0, 3.0)
    f = np.broadcast_to(np.eye(2), (8, 8, 2, 2)).copy()
    f[:, 4:] = truth
    f[::2, 4:] = truth @ rotation_matrix(60.0)  # some patterns on another symmetry branch
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    fields, used = strain_fields(f, np.zeros((8, 8), int), mask, order=6)
    assert (used == mask).all()
    np.testing.assert_allclose(fields["exx"][:, 4:], 0.01, atol=1e-12)
    np.testing.assert_allclose(fields["rotation"][:, 4:], 3.0, atol=1e-9)
    np.testing.assert_allclose(fields["rotation"][:, :4], 0.0, atol=1e-9)


@pytest.mark.parametrize("bad, message", [("middle", "'auto'"), (np.zeros((8, 8), bool), "no probe position"),
                                          (np.ones((4, 4), bool), "shape")])
def test_bad_reference_is_refused_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        strain_fields(np.broadcast_to(np.eye(2), (8, 8, 2, 2)).copy(), np.zeros((8, 8), int), bad, order=6)
