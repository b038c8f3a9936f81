"""Disorientation by hand, orix crystal maps round-tripped (and checked against simulated spots), .ang files."""

import numpy as np
import pytest
import xarray as xr

from stemkit.orientation.export import disorientation, from_crystal_map, to_crystal_map, write_ang
from stemkit.physics.kinematic import simulate_kinematic
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import (
    axis_angle_to_matrix,
    matrix_to_quaternion,
    quaternion_multiply,
    random_fundamental_zone,
    random_quaternions,
)

IDENTITY = [1.0, 0.0, 0.0, 0.0]


def turn(axis, angle_deg):
    return matrix_to_quaternion(axis_angle_to_matrix(axis, angle_deg))


@pytest.mark.parametrize(("name", "axis", "angle", "expected"), [
    ("Cu", [0, 0, 1], 90, 0),     # the 4-fold
    ("Cu", [1, 1, 1], 120, 0),    # the 3-fold
    ("Cu", [1, 1, 0], 180, 0),    # a 2-fold
    ("Cu", [1, 1, 1], 60, 60),    # the Σ3 twin: not a symmetry, and 60° is already its smallest angle
    ("Cu", [0, 0, 1], 45, 45),    # the largest angle about a 4-fold axis
    ("Cu", [0, 0, 1], 100, 10),
    ("Cu2O", [0, 0, 1], 100, 10),
    ("MoS2", [0, 0, 1], 60, 0),   # the 6-fold
    ("MoS2", [0, 0, 1], 90, 30),
    ("MoS2", [1, 0, 0], 180, 0),  # 2-fold along a
    ("MoS2", [0, 1, 0], 180, 0),  # 2-fold along [01-10]
    ("MoS2", [1, 0, 0], 90, 90),  # no 4-fold in a hexagonal crystal
])
def test_disorientation_by_hand(name, axis, angle, expected):
    assert float(disorientation(IDENTITY, turn(axis, angle), name)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["Cu", "MoS2"])
def test_disorientation_is_symmetric_and_invariant(name):
    group = crystal(name).point_group
    q1, q2 = random_quaternions(40, seed=1), random_quaternions(40, seed=2)
    s1 = group.quaternions[np.random.default_rng(3).integers(group.order, size=40)]
    s2 = group.quaternions[np.random.default_rng(4).integers(group.order, size=40)]
    reference = disorientation(q1, q2, name)
    np.testing.assert_allclose(disorientation(q2, q1, group), reference, atol=1e-6)
    np.testing.assert_allclose(disorientation(quaternion_multiply(q1, s1), quaternion_multiply(q2, s2), name),
                               reference, atol=1e-6)
    assert reference.max() <= (62.8 if name == "Cu" else 93.9)  # the largest disorientations of m-3m and 6/mmm


def test_disorientation_shapes_and_nan():
    q = random_quaternions(6, seed=5).reshape(2, 3, 4)
    q[1, 2] = np.nan
    angles = disorientation(q, IDENTITY, "Cu")
    assert angles.shape == (2, 3)
    assert np.isnan(angles[1, 2]) and np.isfinite(angles[0]).all()


def fake_result(shape=(3, 4), seed=0) -> xr.Dataset:
    """A result Dataset as OrientationMapper.predict makes it, with one pattern where nothing was found."""
    rng = np.random.default_rng(seed)
    n = shape[0] * shape[1]
    phase = np.array(["Cu", "Cu2O"])[rng.integers(2, size=n)]
    quaternion = np.concatenate([random_fundamental_zone(n, crystal("Cu").point_group, seed=seed)])
    phase[5], quaternion[5] = "", np.nan
    return xr.Dataset(
        {"quaternion": (("scan_y", "scan_x", "quat"), quaternion.reshape(*shape, 4)),
         "phase": (("scan_y", "scan_x"), phase.reshape(shape)),
         "confidence": (("scan_y", "scan_x"), rng.uniform(0.5, 1, size=shape).astype(np.float32)),
         "n_peaks": (("scan_y", "scan_x"), rng.integers(1, 30, size=shape).astype(np.int32))},
        coords={"scan_y": ("scan_y", 2.0 * np.arange(shape[0]), {"units": "nm"}),
                "scan_x": ("scan_x", 2.0 * np.arange(shape[1]), {"units": "nm"}), "quat": ["w", "x", "y", "z"]},
        attrs={"phases": ["Cu", "Cu2O"]},
    )


def test_crystal_map_round_trip():
    result = fake_result()
    cmap = to_crystal_map(result, ["Cu", "Cu2O"])
    assert cmap.shape == (3, 4) and cmap.scan_unit == "nm" and cmap.dx == 2.0 and cmap.dy == 2.0
    assert [cmap.phases[i].name for i in (0, 1)] == ["Cu", "Cu2O"]
    assert cmap.phases[1].point_group.name == "m-3m" and cmap.phases[0].color != cmap.phases[1].color
    assert (cmap.phase_id == -1).sum() == 1
    back = from_crystal_map(cmap)
    np.testing.assert_array_equal(back["phase"].values, result["phase"].values)
    np.testing.assert_allclose(back["quaternion"].values, result["quaternion"].values, atol=1e-12)
    np.testing.assert_allclose(back["confidence"].values, result["confidence"].values)
    np.testing.assert_allclose(back["scan_x"].values, result["scan_x"].values)
    assert back.attrs["phases"] == ["Cu", "Cu2O"]


def test_missing_crystal_is_explained():
    with pytest.raises(ValueError, match="no crystal given for phase"):
        to_crystal_map(fake_result(), ["Cu"])


@pytest.mark.parametrize("name", ["Cu2O", "MoS2"])
def test_orix_view_of_the_crystal_map_predicts_the_simulated_spots(name):
    """Through simulation: orix, given the map, puts each reflection where stemkit draws it.

    orix orientations map the lab to the crystal, so a crystal vector's lab direction is ``~o * g``.
    """
    from orix.vector import Miller

    xtal = crystal(name)
    q = random_fundamental_zone(4, xtal.point_group, seed=7)
    spots = simulate_kinematic(xtal, q, beam_energy_kev=300, k_max=1.2, excitation_error_width=0.01, dtype=np.float64)
    result = xr.Dataset({"quaternion": (("scan_y", "scan_x", "quat"), q.reshape(2, 2, 4)),
                         "phase": (("scan_y", "scan_x"), np.full((2, 2), name))}, attrs={"phases": [name]})
    cmap = to_crystal_map(result, [xtal])
    orientations = cmap.orientations
    for i in range(len(q)):
        lab = (~orientations[i]) * Miller(hkl=spots.reflections.hkl, phase=cmap.phases[0])
        np.testing.assert_allclose(lab.data[:, 0], spots.kx[i], atol=1e-9)
        np.testing.assert_allclose(lab.data[:, 1], spots.ky[i], atol=1e-9)


def test_ang_file_round_trip_through_orix(tmp_path):
    from orix import io

    result = fake_result(shape=(4, 5), seed=3)
    path = write_ang(result, tmp_path / "map.ang", ["Cu", "Cu2O"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_ang(result, path, ["Cu", "Cu2O"])
    write_ang(result, path, ["Cu", "Cu2O"], overwrite=True)
    text = path.read_text()
    assert "# Symmetry              43" in text and "# LatticeConstants      4.2696" in text
    cmap = io.load(path, autogen_names=False)
    assert cmap.shape == (4, 5) and cmap.scan_unit == "um"
    back = from_crystal_map(cmap)
    np.testing.assert_allclose(back["scan_x"].values, result["scan_x"].values, atol=1e-6)
    np.testing.assert_array_equal(back["phase"].values, result["phase"].values)
    indexed = result["phase"].values != ""
    error = disorientation(back["quaternion"].values[indexed], result["quaternion"].values[indexed], "Cu")
    assert error.max() < 0.01
    np.testing.assert_allclose(back["ci"].values[indexed], result["confidence"].values[indexed], atol=1e-4)
    assert np.isnan(back["quaternion"].values[~indexed]).all()
