"""Point groups: orders, closure, space-group derivation and agreement with orix."""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.physics import PointGroup, laue_class
from stemkit.physics.crystal import direct_basis_from_parameters

ORDERS = {"-1": 1, "2/m": 2, "mmm": 4, "4/m": 4, "4/mmm": 8, "-3": 3, "-3m": 6, "6/m": 6, "6/mmm": 12,
          "m-3": 12, "m-3m": 24}


def as_set(rotations: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(row) for row in np.round(rotations.reshape(-1, 9), 6) + 0.0}


@pytest.mark.parametrize(("name", "order"), ORDERS.items())
def test_laue_class_order_closure_and_identity(name, order):
    group = PointGroup.from_name(name)
    assert group.name == name and group.order == order
    assert group.is_closed()
    np.testing.assert_allclose(group.rotations[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(group.rotations), 1.0)
    inverses = np.swapaxes(group.rotations, 1, 2)
    assert as_set(inverses) == as_set(group.rotations)  # closed under inversion of the rotation


@pytest.mark.parametrize(
    ("space_group", "lattice", "laue", "order"),
    [
        (225, (3.6, 3.6, 3.6, 90, 90, 90), "m-3m", 24),  # Fm-3m
        (227, (5.4, 5.4, 5.4, 90, 90, 90), "m-3m", 24),  # Fd-3m
        (224, (4.3, 4.3, 4.3, 90, 90, 90), "m-3m", 24),  # Pn-3m
        (216, (5.6, 5.6, 5.6, 90, 90, 90), "m-3m", 24),  # F-43m: Laue class of -43m
        (200, (4.0, 4.0, 4.0, 90, 90, 90), "m-3", 12),  # Pm-3
        (198, (4.0, 4.0, 4.0, 90, 90, 90), "m-3", 12),  # P2_13
        (194, (3.2, 3.2, 12.3, 90, 90, 120), "6/mmm", 12),  # P6_3/mmc
        (187, (2.5, 2.5, 20.0, 90, 90, 120), "6/mmm", 12),  # P-6m2
        (176, (9.4, 9.4, 6.9, 90, 90, 120), "6/m", 6),  # P6_3/m
        (164, (4.0, 4.0, 6.0, 90, 90, 120), "-3m", 6),  # P-3m1
        (166, (5.0, 5.0, 13.0, 90, 90, 120), "-3m", 6),  # R-3m (hexagonal axes)
        (148, (5.0, 5.0, 13.0, 90, 90, 120), "-3", 3),
        (139, (3.0, 3.0, 9.0, 90, 90, 90), "4/mmm", 8),  # I4/mmm
        (88, (5.0, 5.0, 11.0, 90, 90, 90), "4/m", 4),  # I4_1/a
        (62, (5.0, 6.0, 7.0, 90, 90, 90), "mmm", 4),  # Pnma
        (14, (5.0, 6.0, 7.0, 90, 100, 90), "2/m", 2),  # P2_1/c
        (2, (5.0, 6.0, 7.0, 80, 100, 110), "-1", 1),  # P-1
    ],
)
def test_point_group_from_space_group(space_group, lattice, laue, order):
    basis = direct_basis_from_parameters(*lattice)
    group = PointGroup.from_space_group(space_group, basis)
    assert group.name == laue and group.order == order and group.is_closed()
    assert as_set(group.rotations) == as_set(PointGroup.from_name(laue).rotations)  # standard settings agree
    # Each rotation maps the lattice onto itself: integer matrices in the fractional basis.
    fractional = np.linalg.inv(basis) @ group.rotations @ basis
    np.testing.assert_allclose(fractional, np.round(fractional), atol=1e-9)


@pytest.mark.parametrize(("name", "orix_name"), [("m-3m", "O"), ("m-3", "T"), ("6/mmm", "D6"), ("6/m", "C6"),
                                                 ("-3m", "D3"), ("-3", "C3"), ("4/mmm", "D4"), ("4/m", "C4"),
                                                 ("mmm", "D2"), ("-1", "C1")])
def test_rotation_sets_match_orix(name, orix_name):
    import orix.quaternion.symmetry as orix_symmetry

    orix_group = getattr(orix_symmetry, orix_name)
    assert as_set(PointGroup.from_name(name).rotations) == as_set(orix_group.to_matrix())


def test_monoclinic_unique_axis_is_b_along_y():
    """Unlike orix's C2 (2-fold along z), stemkit's 2/m follows the b-unique setting (a ∥ x, b ∥ y)."""
    rotations = PointGroup.from_name("2/m").rotations
    np.testing.assert_allclose(rotations[1], np.diag([-1.0, 1.0, -1.0]), atol=1e-12)


@pytest.mark.parametrize(("given", "laue"), [("m-3m", "m-3m"), ("m3m", "m-3m"), ("-43m", "m-3m"), ("432", "m-3m"),
                                             ("PGm3barm", "m-3m"), ("23", "m-3"), ("6/mmm", "6/mmm"),
                                             ("PG6barm2", "6/mmm"), ("3m1", "-3m"), ("mm2", "mmm"), ("1", "-1")])
def test_laue_class_names(given, laue):
    assert laue_class(given) == laue


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="unknown point group"):
        laue_class("7/m")
    with pytest.raises(ValueError, match="unknown space group"):
        PointGroup.from_space_group("Xyz", np.eye(3))
    with pytest.raises(ValueError, match="proper orthogonal"):
        PointGroup("bad", -np.eye(3)[None])
    with pytest.raises(ValueError, match="compatible"):
        PointGroup.from_space_group(225, direct_basis_from_parameters(3, 4, 5, 90, 90, 90))
