"""Polar read-off by hand-computed cases, and the convention round trip with the simulator."""

import numpy as np
import pytest

from stemkit.physics.specimens import deformation_gradient, strain_from_deformation
from stemkit.strain.polar import (
    deformation_from_bases,
    deformation_from_reciprocal,
    polar_strain,
    relative_deformation,
    rotation_matrix,
)


def test_pure_rotation_reads_as_rotation_only():
    c, s = np.cos(np.deg2rad(7.0)), np.sin(np.deg2rad(7.0))
    exx, eyy, exy, rotation = polar_strain(np.array([[c, -s], [s, c]]))
    np.testing.assert_allclose([exx, eyy, exy], 0.0, atol=1e-15)
    assert rotation == pytest.approx(7.0)


def test_pure_shear_reads_as_tensor_shear():
    # V = [[1, 0.01], [0.01, 1]] is symmetric: R = I and exy = 0.01 (engineering shear would be 0.02)
    exx, eyy, exy, rotation = polar_strain(np.array([[1.0, 0.01], [0.01, 1.0]]))
    assert (exx, eyy, exy, rotation) == pytest.approx((0.0, 0.0, 0.01, 0.0), abs=1e-15)


def test_simple_shear_splits_into_stretch_and_rotation():
    # F = [[1, γ], [0, 1]]: θ = atan2(-γ, 2); for γ = 0.02, θ = -0.5729°, V = F Rᵀ by hand
    gamma = 0.02
    theta = np.arctan2(-gamma, 2.0)
    c, s = np.cos(theta), np.sin(theta)
    v = np.array([[c - gamma * s, s + gamma * c], [-s, c]])  # F @ R(θ)ᵀ
    exx, eyy, exy, rotation = polar_strain(np.array([[1.0, gamma], [0.0, 1.0]]))
    assert rotation == pytest.approx(np.rad2deg(theta))
    assert (exx, eyy, exy) == pytest.approx((v[0, 0] - 1, v[1, 1] - 1, v[0, 1]))
    assert exy == pytest.approx(gamma / 2, rel=1e-3)


def test_uniaxial_strain_along_x_and_y():
    assert polar_strain(np.diag([1.02, 1.0])) == pytest.approx((0.02, 0.0, 0.0, 0.0), abs=1e-15)
    assert polar_strain(np.diag([1.0, 0.97])) == pytest.approx((0.0, -0.03, 0.0, 0.0), abs=1e-15)


def test_uniaxial_strain_then_rotation():
    f = np.diag([1.02, 1.0]) @ rotation_matrix(-4.0)  # V R with V = diag(1.02, 1)
    assert polar_strain(f) == pytest.approx((0.02, 0.0, 0.0, -4.0), abs=1e-12)


def test_reciprocal_map_of_uniaxial_strain():
    # spots along x move in by 1/1.02 when the lattice stretches 2 % along x
    assert polar_strain(deformation_from_reciprocal(np.diag([1 / 1.02, 1.0]))) == pytest.approx(
        (0.02, 0.0, 0.0, 0.0), abs=1e-12)


def test_reciprocal_map_of_rotation_turns_the_same_way():
    # the reciprocal lattice turns with the real one: T = R(θ) ⇒ F = R(θ)
    assert polar_strain(deformation_from_reciprocal(rotation_matrix(3.0)))[3] == pytest.approx(3.0)


def test_bases_relative_to_reference():
    reference = np.array([[0.5, 0.25], [0.0, 0.433]])
    f = deformation_gradient(0.01, -0.02, 0.005, 2.0)
    measured = np.linalg.inv(f).T @ reference
    assert polar_strain(deformation_from_bases(measured, reference)) == pytest.approx((0.01, -0.02, 0.005, 2.0))


def test_relative_deformation_removes_the_reference():
    f_ref = deformation_gradient(0.01, 0.01, 0.0, 1.0)
    f_rel = deformation_gradient(0.02, -0.01, 0.003, -2.0)
    assert polar_strain(relative_deformation(f_rel @ f_ref, f_ref)) == pytest.approx((0.02, -0.01, 0.003, -2.0))


@pytest.mark.parametrize("values", [(0.02, 0.0, 0.0, 0.0), (0.0, -0.015, 0.0, 3.0), (0.01, 0.02, -0.008, -25.0),
                                    (0.0, 0.0, 0.012, 44.0)])
def test_round_trip_with_the_simulators_convention(values):
    f = deformation_gradient(*values)
    assert polar_strain(f) == pytest.approx(values)
    assert polar_strain(f) == pytest.approx(strain_from_deformation(f))


def test_maps_give_nan_where_the_deformation_is_bad():
    f = np.stack([np.eye(2), np.full((2, 2), np.nan), np.diag([1.0, -1.0])])
    exx, *_, rotation = polar_strain(f)
    assert exx[0] == 0.0 and np.isnan(exx[1:]).all() and np.isnan(rotation[1:]).all()


def test_wrong_shape_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        polar_strain(np.eye(3))
