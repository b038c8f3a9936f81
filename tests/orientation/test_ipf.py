"""IPF colours: the corners by hand, symmetry invariance, and orix's IPFColorKeyTSL on random orientations."""

import numpy as np
import pytest

from stemkit.orientation.ipf import IPF_LAUE_CLASSES, ipf_colors, ipf_key_image, ipf_sector
from stemkit.physics.presets import crystal
from stemkit.physics.rotations import (
    matrix_to_quaternion,
    quaternion_multiply,
    random_quaternions,
    to_orix,
)
from stemkit.physics.symmetry import PointGroup

RED, GREEN, BLUE, WHITE = (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)
ORIX_GROUPS = {"m-3m": "Oh", "m-3": "Th", "6/mmm": "D6h", "6/m": "C6h", "-3m": "D3d", "-3": "S6",
               "4/mmm": "D4h", "4/m": "C4h", "mmm": "D2h"}


def beam_along(crystal_direction) -> np.ndarray:
    """A quaternion whose crystal direction along the beam (+z) is ``crystal_direction``: Rᵀ z = d."""
    d = np.asarray(crystal_direction, dtype=float)
    d /= np.linalg.norm(d)
    helper = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(helper, d)
    e1 /= np.linalg.norm(e1)
    rotation_transpose = np.column_stack([e1, np.cross(d, e1), d])  # columns: crystal images of x, y, z
    return matrix_to_quaternion(rotation_transpose.T)


def hexagonal(u, v, w):
    """Cartesian direction of the three-index hexagonal direction [uvw] (a ∥ x, unit c)."""
    return u * np.array([1.0, 0, 0]) + v * np.array([-0.5, np.sqrt(3) / 2, 0]) + w * np.array([0, 0, 1.0])


@pytest.mark.parametrize(("direction", "color"), [((0, 0, 1), RED), ((1, 0, 1), GREEN), ((1, 1, 1), BLUE),
                                                  ((0, 1, 1), GREEN), ((-1, -1, 1), BLUE), ((0, 0, -1), RED),
                                                  ((1, 0, 0), RED)])
def test_cubic_corners(direction, color):
    np.testing.assert_allclose(ipf_colors(beam_along(direction), "m-3m"), color, atol=1e-9)


@pytest.mark.parametrize(("direction", "color"), [((0, 0, 1), RED), (hexagonal(1, 0, 0), GREEN),  # [2-1-10]
                                                  (hexagonal(2, 1, 0), BLUE),  # [10-10]
                                                  (hexagonal(0, 1, 0), GREEN), (hexagonal(1, 1, 0), GREEN)])
def test_hexagonal_corners(direction, color):
    np.testing.assert_allclose(ipf_colors(beam_along(direction), "6/mmm"), color, atol=1e-9)


def test_sector_centre_is_white_and_corners_are_labelled():
    sector = ipf_sector("m-3m")
    np.testing.assert_allclose(ipf_colors(beam_along(sector.center), "m-3m"), WHITE, atol=1e-9)
    assert sector.labels == ("[001]", "[101]", "[111]")
    assert ipf_sector("6/mmm").labels == ("[0001]", "[2-1-10]", "[10-10]")


def test_symmetry_equivalents_and_nan_rows():
    cu = crystal("Cu2O").point_group
    q = random_quaternions(50, seed=3)
    equivalent = quaternion_multiply(q, cu.quaternions[7])  # R @ S: the same orientation
    np.testing.assert_allclose(ipf_colors(equivalent, cu), ipf_colors(q, cu), atol=1e-9)
    np.testing.assert_allclose(ipf_colors(q, crystal("Cu2O")), ipf_colors(q, "m-3m"), atol=1e-12)
    grid = np.stack([q[:6], np.full((6, 4), np.nan)])
    colors = ipf_colors(grid, cu)
    assert colors.shape == (2, 6, 3)
    assert np.isnan(colors[1]).all() and np.isfinite(colors[0]).all()
    assert colors[0].min() >= 0 and colors[0].max() <= 1


@pytest.mark.parametrize("laue", IPF_LAUE_CLASSES)
@pytest.mark.parametrize("direction", [(0, 0, 1), (1, 0, 0), (0.3, -0.5, 0.8)])
def test_matches_orix_tsl_key(laue, direction):
    from orix.plot import IPFColorKeyTSL
    from orix.quaternion import symmetry
    from orix.vector import Vector3d

    q = random_quaternions(1000, seed=11)
    orix_group = getattr(symmetry, ORIX_GROUPS[laue])
    theirs = IPFColorKeyTSL(orix_group, direction=Vector3d(direction)).orientation2color(to_orix(q))
    error = np.abs(ipf_colors(q, laue, direction) - theirs).max(axis=1)
    # orix samples the hue re-parametrisation on 1000 azimuths (this module on 7200): ~0.01 apart at most.
    if laue == "m-3":
        # Its sector edges are not mirrors, so colours jump there; orix picks the symmetric image
        # closest to its (hand-set) sector centre, which near those edges can lie just outside the
        # sector (by ~1e-3), and then colours it from the other side of the jump.
        assert np.mean(error < 0.015) > 0.99
    else:
        assert error.max() < 0.015


def test_other_settings_and_groups_are_refused():
    with pytest.raises(ValueError, match="no IPF colour key"):
        ipf_colors([1.0, 0, 0, 0], "2/m")
    from stemkit.physics.rotations import axis_angle_to_matrix

    turn = axis_angle_to_matrix([0, 0, 1], 15.0)  # 2-folds 15° off the a axis
    turned = PointGroup("6/mmm", turn @ PointGroup.from_name("6/mmm").rotations @ turn.T)
    with pytest.raises(ValueError, match="standard setting"):
        ipf_colors([1.0, 0, 0, 0], turned)


def test_key_image():
    key = ipf_key_image("m-3m", size=64)
    assert key.dims == ("y", "x", "channel") and key.sizes["x"] == 64
    assert key.attrs["corner_labels"] == ["[001]", "[101]", "[111]"]
    alpha = key.sel(channel="A").values
    assert 0.3 < alpha.mean() < 0.9  # the triangle, and transparent outside it
    # the pixel of the triangle nearest each corner has the corner's colour
    yy, xx = np.meshgrid(key.y.values, key.x.values, indexing="ij")
    for x, y, color in zip(key.attrs["corner_x"], key.attrs["corner_y"], (RED, GREEN, BLUE)):
        distance = np.where(alpha > 0, np.hypot(xx - x, yy - y), np.inf)
        row, col = np.unravel_index(np.argmin(distance), distance.shape)
        np.testing.assert_allclose(key.values[row, col, :3], color, atol=0.15)
