"""Rotations: quaternion/matrix conventions, uniform sampling, fundamental zones, misorientation, orix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemkit.physics import (
    PointGroup,
    axis_angle_to_matrix,
    crystal,
    from_orix,
    matrix_to_quaternion,
    misorientation_angle,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    random_fundamental_zone,
    random_quaternions,
    reduce_to_fundamental_zone,
    rotation_angle,
    simulate_kinematic,
    to_orix,
)

GROUP_NAMES = ["m-3m", "m-3", "6/mmm", "6/m", "-3m", "-3", "4/mmm", "4/m", "mmm", "2/m", "-1"]


def test_quarter_turn_about_z_takes_x_to_y():
    """Hand-computed: q = (cos 45°, 0, 0, sin 45°) is +90° about z; R @ x = y."""
    q = [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(axis_angle_to_matrix([0, 0, 1], 90), R, atol=1e-15)
    np.testing.assert_allclose(matrix_to_quaternion(R), q, atol=1e-15)
    assert rotation_angle(R) == pytest.approx(90) and rotation_angle(np.array(q)) == pytest.approx(90)


def test_quaternion_matrix_round_trip():
    q = random_quaternions(500, seed=1)
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quaternion(R), q, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(-q), R, atol=1e-12)  # q and -q: the same rotation
    half_turns = quaternion_to_matrix([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 1, 0]])  # w = 0 branch
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(half_turns)), half_turns, atol=1e-12)


def test_quaternion_product_is_the_matrix_product():
    q1, q2 = random_quaternions(100, seed=2), random_quaternions(100, seed=3)
    np.testing.assert_allclose(quaternion_to_matrix(quaternion_multiply(q1, q2)),
                               quaternion_to_matrix(q1) @ quaternion_to_matrix(q2), atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(quaternion_conjugate(q1)),
                               np.swapaxes(quaternion_to_matrix(q1), 1, 2), atol=1e-12)


def test_random_rotations_are_seeded_and_uniform():
    q = random_quaternions(20000, seed=7)
    np.testing.assert_array_equal(q, random_quaternions(20000, seed=7))
    assert np.all(q[:, 0] >= 0)
    # Haar measure: E[R] = 0 and P(angle <= ω) = (ω - sin ω) / π.
    np.testing.assert_allclose(quaternion_to_matrix(q).mean(axis=0), 0, atol=0.02)
    omega = np.deg2rad(np.sort(rotation_angle(q)))
    cdf = (omega - np.sin(omega)) / np.pi
    empirical = np.arange(1, len(q) + 1) / len(q)
    assert np.max(np.abs(cdf - empirical)) < 0.015  # Kolmogorov–Smirnov, ~1.5/sqrt(N)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_fundamental_zone_reduction(name):
    group = PointGroup.from_name(name)
    q = random_quaternions(300, seed=11)
    reduced = reduce_to_fundamental_zone(q, group)
    np.testing.assert_allclose(misorientation_angle(q, reduced, group), 0, atol=1e-5)
    np.testing.assert_allclose(reduce_to_fundamental_zone(reduced, group), reduced, atol=1e-9)  # idempotent
    # The representative has the smallest rotation angle among its equivalents.
    equivalent_angles = rotation_angle(quaternion_multiply(q[:, None], group.quaternions[None]))
    np.testing.assert_allclose(rotation_angle(reduced), equivalent_angles.min(axis=1), atol=1e-6)
    # Every equivalent R @ S reduces to the same representative.
    for S in group.quaternions[1:4]:
        np.testing.assert_allclose(reduce_to_fundamental_zone(quaternion_multiply(q, S), group), reduced, atol=1e-7)


def test_cubic_fundamental_zone_angle_bound():
    """The largest angle in the 432 fundamental zone is 62.80°.

    Hand-computed: the zone's corners have Rodrigues vector (√2-1, √2-1, 3-2√2), and tan(ω/2) = |ρ|.
    """
    group = PointGroup.from_name("m-3m")
    q = random_fundamental_zone(20000, group, seed=5)
    corner = np.array([math.sqrt(2) - 1, math.sqrt(2) - 1, 3 - 2 * math.sqrt(2)])
    bound = math.degrees(2 * math.atan(np.linalg.norm(corner)))  # 62.80°
    assert rotation_angle(q).max() <= bound + 1e-6
    assert rotation_angle(q).max() > bound - 3


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_misorientation_is_invariant_under_crystal_symmetry(name):
    group = PointGroup.from_name(name)
    q1, q2 = random_quaternions(200, seed=21), random_quaternions(200, seed=22)
    angles = misorientation_angle(q1, q2, group)
    for S in group.quaternions:
        np.testing.assert_allclose(misorientation_angle(quaternion_multiply(q1, S), q2, group), angles, atol=1e-6)
        np.testing.assert_allclose(misorientation_angle(q1, quaternion_multiply(q2, S), group), angles, atol=1e-6)
    np.testing.assert_allclose(misorientation_angle(q2, q1, group), angles, atol=1e-6)
    assert np.all(angles <= misorientation_angle(q1, q2) + 1e-9)


def test_misorientation_of_a_known_tilt():
    cubic = PointGroup.from_name("m-3m")
    R = axis_angle_to_matrix([0, 0, 1], 100)[None]
    assert misorientation_angle(np.eye(3)[None], R, cubic)[0] == pytest.approx(10)  # 100° ~ 10° with a 4-fold
    assert misorientation_angle(np.eye(3)[None], R)[0] == pytest.approx(100)


@pytest.mark.parametrize("name", ["m-3m", "m-3", "6/mmm", "-3m", "4/mmm", "mmm"])
def test_misorientation_matches_orix(name):
    group = PointGroup.from_name(name)
    q1, q2 = random_quaternions(300, seed=31), random_quaternions(300, seed=32)
    orix_angles = to_orix(q1, group).angle_with(to_orix(q2, group), degrees=True)
    np.testing.assert_allclose(misorientation_angle(q1, q2, group), orix_angles, atol=1e-5)


def test_orix_round_trip():
    q = random_quaternions(50, seed=41)
    np.testing.assert_allclose(from_orix(to_orix(q)), q, atol=1e-12)
    np.testing.assert_allclose(from_orix(to_orix(quaternion_to_matrix(q))), q, atol=1e-12)


@pytest.mark.parametrize("name", ["Cu", "MoS2"])
def test_orix_orientation_predicts_the_simulated_spots(name):
    """Round trip through simulation: orix, told the orientation, puts each g where stemkit draws it.

    orix orientations map sample → crystal, so the lab direction of a crystal vector is ``~o * v``.
    """
    from diffpy.structure import Lattice, Structure
    from orix.crystal_map import Phase
    from orix.vector import Miller

    xtal = crystal(name)
    q = random_quaternions(5, seed=51)
    patterns = simulate_kinematic(xtal, q, beam_energy_kev=300, k_max=1.2, excitation_error_width=0.01,
                                  dtype=np.float64)
    phase = Phase(point_group="m-3m" if name == "Cu" else "6/mmm",
                  structure=Structure(lattice=Lattice(*xtal.lattice_parameters)))
    hkl = patterns.reflections.hkl
    orientation = to_orix(q, xtal.point_group)
    for i in range(len(q)):
        lab = (~orientation[i]) * Miller(hkl=hkl, phase=phase)
        np.testing.assert_allclose(lab.data[:, 0], patterns.kx[i], atol=1e-9)
        np.testing.assert_allclose(lab.data[:, 1], patterns.ky[i], atol=1e-9)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="last axis of length 4"):
        quaternion_to_matrix([1, 0, 0])
    with pytest.raises(ValueError, match="zero norm"):
        quaternion_to_matrix([0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"\(N, 3, 3\)"):
        misorientation_angle(np.zeros((2, 5)), np.zeros((2, 5)))
