"""Crystals: lattices, d-spacings, structure factors, extinctions, presets and CIF reading."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from stemkit.physics import Atom, Crystal, crystal, preset_names, reflections, scattering_factor

SMALL_HKL = np.array([hkl for hkl in itertools.product(range(-4, 5), repeat=3) if any(hkl)])


def absent(xtal: Crystal, hkl: np.ndarray) -> np.ndarray:
    """True where |F| vanishes (relative to the strongest reflection with |h|, |k|, |l| <= 4)."""
    strongest = np.abs(xtal.structure_factor(SMALL_HKL)).max()
    return np.abs(xtal.structure_factor(hkl)) < 1e-8 * strongest


def debye_waller(xtal: Crystal, hkl, b_iso: float) -> float:
    g = 1 / float(xtal.d_spacing(hkl))
    return math.exp(-b_iso * g**2 / 4)


# --------------------------------------------------------------------------- lattice geometry
def test_cubic_bases_and_d_spacings():
    cu = crystal("Cu")
    a = 3.6149
    np.testing.assert_allclose(cu.direct_basis, a * np.eye(3), atol=1e-12)
    np.testing.assert_allclose(cu.reciprocal_basis, np.eye(3) / a, atol=1e-12)  # no 2π
    assert cu.d_spacing([1, 1, 1]) == pytest.approx(a / math.sqrt(3))
    assert cu.d_spacing([2, 0, 0]) == pytest.approx(a / 2)
    assert cu.d_spacing([2, 2, 0]) == pytest.approx(a / math.sqrt(8))
    assert cu.d_spacing([3, 1, 1]) == pytest.approx(a / math.sqrt(11))
    assert cu.volume == pytest.approx(a**3)


def test_hexagonal_frame_a_along_x_c_star_along_z():
    mos2 = crystal("MoS2")
    a, c = 3.1604, 12.295
    basis = mos2.direct_basis
    np.testing.assert_allclose(basis[:, 0], [a, 0, 0], atol=1e-12)
    np.testing.assert_allclose(basis[:, 1], [-a / 2, a * math.sqrt(3) / 2, 0], atol=1e-12)
    np.testing.assert_allclose(basis[:, 2], [0, 0, c], atol=1e-12)
    np.testing.assert_allclose(basis.T @ mos2.reciprocal_basis, np.eye(3), atol=1e-12)
    assert mos2.volume == pytest.approx(math.sqrt(3) / 2 * a**2 * c)
    assert mos2.d_spacing([1, 0, 0]) == pytest.approx(a * math.sqrt(3) / 2)
    assert mos2.d_spacing([1, 1, 0]) == pytest.approx(a / 2)
    assert mos2.d_spacing([0, 0, 2]) == pytest.approx(c / 2)


def test_triclinic_basis_is_consistent():
    xtal = Crystal(4.0, 5.0, 6.0, 80, 95, 105, [Atom("Fe", (0, 0, 0))])
    basis = xtal.direct_basis
    lengths = np.linalg.norm(basis, axis=0)
    np.testing.assert_allclose(lengths, [4, 5, 6])
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    assert math.degrees(math.acos(cos(basis[:, 1], basis[:, 2]))) == pytest.approx(80)
    assert math.degrees(math.acos(cos(basis[:, 0], basis[:, 2]))) == pytest.approx(95)
    assert math.degrees(math.acos(cos(basis[:, 0], basis[:, 1]))) == pytest.approx(105)
    np.testing.assert_allclose(xtal.reciprocal_basis[:2, 2], 0, atol=1e-12)  # c* ∥ z
    assert xtal.point_group.name == "-1"


def test_invalid_lattice_is_refused():
    with pytest.raises(ValueError, match="lattice parameters"):
        Crystal(-1, 1, 1, 90, 90, 90, [Atom("Cu", (0, 0, 0))])
    with pytest.raises(ValueError, match="do not form a lattice"):
        Crystal(1, 1, 1, 170, 170, 170, [Atom("Cu", (0, 0, 0))])


# --------------------------------------------------------------------------- extinctions
@pytest.mark.parametrize("name", ["Cu", "Au", "Al", "Ni"])
def test_fcc_reflections_are_allowed_iff_unmixed(name):
    xtal = crystal(name)
    parity = SMALL_HKL % 2
    unmixed = np.all(parity == parity[:, :1], axis=1)
    np.testing.assert_array_equal(absent(xtal, SMALL_HKL), ~unmixed)
    # F = 4 f DW for allowed reflections (hand-computed).
    f = float(scattering_factor(name, 1 / float(xtal.d_spacing([1, 1, 1]))))
    b_iso = xtal.atoms[0].b_iso
    assert abs(xtal.structure_factor([1, 1, 1])) == pytest.approx(4 * f * debye_waller(xtal, [1, 1, 1], b_iso))


def test_diamond_extinctions_of_silicon():
    si = crystal("Si")
    parity = SMALL_HKL % 2
    unmixed = np.all(parity == parity[:, :1], axis=1)
    all_odd = np.all(parity == 1, axis=1)
    four_n = SMALL_HKL.sum(axis=1) % 4 == 0
    allowed = unmixed & (all_odd | four_n)
    np.testing.assert_array_equal(absent(si, SMALL_HKL), ~allowed)
    for forbidden in ([2, 0, 0], [2, 2, 2], [4, 2, 0], [1, 0, 0]):
        assert absent(si, np.array([forbidden]))[0], forbidden
    # |F(111)| = 4√2 f DW, |F(220)| = 8 f DW, |F(400)| = 8 f DW (hand-computed).
    for hkl, factor in (([1, 1, 1], 4 * math.sqrt(2)), ([2, 2, 0], 8.0), ([4, 0, 0], 8.0)):
        f = float(scattering_factor("Si", 1 / float(si.d_spacing(hkl))))
        expected = factor * f * debye_waller(si, hkl, 0.46)
        assert abs(si.structure_factor(hkl)) == pytest.approx(expected), hkl


def test_cuprite_extinctions_and_amplitudes():
    """Cu2O, Pn-3m: O at 2a gives 2 f_O for h+k+l even; Cu at 4b gives 4 f_Cu i^(h+k+l) for unmixed hkl."""
    cu2o = crystal("Cu2O")
    parity = SMALL_HKL % 2
    all_odd = np.all(parity == 1, axis=1)
    even_sum = SMALL_HKL.sum(axis=1) % 2 == 0
    np.testing.assert_array_equal(absent(cu2o, SMALL_HKL), ~(even_sum | all_odd))
    assert absent(cu2o, np.array([[1, 0, 0]]))[0]
    assert absent(cu2o, np.array([[2, 1, 0]]))[0]
    assert not absent(cu2o, np.array([[1, 1, 0]]))[0]

    def f(element, hkl, b_iso):
        return float(scattering_factor(element, 1 / float(cu2o.d_spacing(hkl)))) * debye_waller(cu2o, hkl, b_iso)

    assert abs(cu2o.structure_factor([1, 1, 0])) == pytest.approx(2 * f("O", [1, 1, 0], 0.9))
    assert abs(cu2o.structure_factor([1, 1, 1])) == pytest.approx(4 * f("Cu", [1, 1, 1], 1.2))
    assert abs(cu2o.structure_factor([2, 0, 0])) == pytest.approx(abs(2 * f("O", [2, 0, 0], 0.9)
                                                                      - 4 * f("Cu", [2, 0, 0], 1.2)))
    assert abs(cu2o.structure_factor([2, 2, 0])) == pytest.approx(2 * f("O", [2, 2, 0], 0.9)
                                                                  + 4 * f("Cu", [2, 2, 0], 1.2))


@pytest.mark.parametrize("name", ["MoS2", "WS2", "WSe2"])
def test_2h_dichalcogenide_extinctions(name):
    """P6_3/mmc: 00l and hh(-2h)l need l even; 100 and 002 are allowed."""
    xtal = crystal(name)
    assert absent(xtal, np.array([[0, 0, 1], [0, 0, 3], [1, 1, 1], [1, 1, 3]])).all()
    assert not absent(xtal, np.array([[1, 0, 0], [0, 0, 2], [1, 1, 0], [1, 1, 2], [1, 0, 1]])).any()
    assert {atom.element for atom in xtal.atoms} == {"S" if "S2" in name else "Se", "Mo" if "Mo" in name else "W"}
    assert len(xtal.atoms) == 6


def test_graphene_and_hbn_are_single_layers():
    graphene = crystal("graphene")
    f = float(scattering_factor("C", 1 / float(graphene.d_spacing([1, 0, 0])))) * debye_waller(graphene, [1, 0, 0], 0.3)
    assert abs(graphene.structure_factor([1, 0, 0])) == pytest.approx(f)  # |e^{2πi/3} + e^{4πi/3}| = 1
    f110 = float(scattering_factor("C", 1 / float(graphene.d_spacing([1, 1, 0]))))
    assert abs(graphene.structure_factor([1, 1, 0])) == pytest.approx(2 * f110 * debye_waller(graphene, [1, 1, 0], 0.3))
    for xtal in (graphene, crystal("hBN")):
        assert xtal.is_layer and xtal.point_group.order == 12
        assert np.all(reflections(xtal, 2.0).hkl[:, 2] == 0)


@pytest.mark.parametrize("name", preset_names())
def test_friedel_pairs_have_equal_amplitudes(name):
    xtal = crystal(name)
    factor = xtal.structure_factor(SMALL_HKL)
    opposite = xtal.structure_factor(-SMALL_HKL)
    np.testing.assert_allclose(np.abs(factor), np.abs(opposite), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(opposite, np.conj(factor), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", preset_names())
def test_symmetry_equivalent_reflections_have_equal_amplitudes(name):
    """|F(S g)| = |F(g)| for every proper rotation S of the point group (a check of both)."""
    xtal = crystal(name)
    hkl = SMALL_HKL if not xtal.is_layer else SMALL_HKL[SMALL_HKL[:, 2] == 0]
    g = xtal.g_vectors(hkl)
    to_hkl = np.linalg.inv(xtal.reciprocal_basis)
    for rotation in xtal.point_group.rotations:
        rotated = (to_hkl @ rotation @ g.T).T
        np.testing.assert_allclose(rotated, np.round(rotated), atol=1e-9)
        np.testing.assert_allclose(np.abs(xtal.structure_factor(np.round(rotated))), np.abs(xtal.structure_factor(hkl)),
                                   rtol=1e-9, atol=1e-12)


def test_relativistic_structure_factor_scales_with_gamma():
    cu = crystal("Cu")
    assert cu.structure_factor([1, 1, 1], beam_energy_kev=300) == pytest.approx(
        cu.structure_factor([1, 1, 1]) * (1 + 300 / 510.99895))


# --------------------------------------------------------------------------- presets and point groups
@pytest.mark.parametrize(("name", "order", "n_atoms"), [("Cu", 24, 4), ("Au", 24, 4), ("Al", 24, 4), ("Ni", 24, 4),
                                                        ("Si", 24, 8), ("Cu2O", 24, 6), ("MoS2", 12, 6),
                                                        ("WS2", 12, 6), ("WSe2", 12, 6), ("graphene", 12, 2),
                                                        ("hBN", 12, 2)])
def test_presets(name, order, n_atoms):
    xtal = Crystal.preset(name)
    assert xtal.name and xtal.point_group.order == order and len(xtal.atoms) == n_atoms
    assert xtal.point_group.is_closed()


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="Cu2O"):
        crystal("unobtainium")
    assert crystal("cuprite").name == "Cu2O"


def test_reflections_are_enumerated_once_and_cached():
    cu = crystal("Cu")
    first = reflections(cu, 1.5)
    assert reflections(cu, 1.5) is first
    assert np.all(first.g_norm <= 1.5) and np.all(np.diff(first.g_norm) >= -1e-12)
    # fcc: no mixed-parity reflection survives; {111} are the 8 innermost.
    parity = first.hkl % 2
    assert np.all(parity == parity[:, :1])
    assert sorted(map(tuple, np.abs(first.hkl[:8]))) == [(1, 1, 1)] * 8
    # Count against a brute-force sweep.
    a = 3.6149
    grid = np.array(list(itertools.product(range(-6, 7), repeat=3)))
    norm = np.linalg.norm(grid, axis=1) / a
    fcc = np.all(grid % 2 == grid[:, :1] % 2, axis=1)
    assert len(first) == int(np.sum((norm > 0) & (norm <= 1.5) & fcc))


# --------------------------------------------------------------------------- CIF and asymmetric units
CUPRITE_CIF = """\
data_cuprite
_cell_length_a 4.2696
_cell_length_b 4.2696
_cell_length_c 4.2696
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P n -3 m'
_space_group_IT_number 224
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_B_iso_or_equiv
Cu1 Cu1+ 0.25 0.25 0.25 1.0 1.2
O1 O2- 0.0 0.0 0.0 1.0 0.9
"""

MOS2_CIF_WITHOUT_B = """\
data_MoS2
_cell_length_a 3.1604
_cell_length_b 3.1604
_cell_length_c 12.295
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 120
_symmetry_space_group_name_H-M 'P 63/m m c'
_space_group_IT_number 194
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Mo1 Mo 0.333333 0.666667 0.25
S1 S 0.333333 0.666667 0.621
"""


def test_cif_expands_symmetry_and_matches_the_preset(tmp_path):
    path = tmp_path / "cuprite.cif"
    path.write_text(CUPRITE_CIF)
    read = Crystal.from_cif(path)
    assert len(read.atoms) == 6 and read.space_group == 224 and read.point_group.order == 24
    assert sorted(atom.element for atom in read.atoms) == ["Cu"] * 4 + ["O"] * 2
    np.testing.assert_allclose(read.structure_factor(SMALL_HKL), crystal("Cu2O").structure_factor(SMALL_HKL),
                               atol=1e-10)


def test_cif_without_displacement_parameters_gets_the_default(tmp_path):
    path = tmp_path / "mos2.cif"
    path.write_text(MOS2_CIF_WITHOUT_B)
    read = Crystal.from_cif(path, name="molybdenite", default_b_iso=0.4)
    assert read.name == "molybdenite" and len(read.atoms) == 6 and read.point_group.name == "6/mmm"
    assert all(atom.b_iso == 0.4 for atom in read.atoms)


def test_unreadable_cif_says_which_file(tmp_path):
    path = tmp_path / "broken.cif"
    path.write_text("this is not a CIF")
    with pytest.raises(ValueError, match="broken.cif"):
        Crystal.from_cif(path)


def test_asymmetric_unit_expansion_drops_duplicates():
    xtal = Crystal.from_asymmetric_unit(4.0, 4.0, 4.0, 90, 90, 90, [Atom("Cu", (0, 0, 0)), Atom("Cu", (0.5, 0.5, 0))],
                                        "Fm-3m")
    assert len(xtal.atoms) == 4  # the second atom is a copy of the first


def test_atom_validation():
    assert Atom("Cu1+", (0, 0, 0)).element == "Cu"
    with pytest.raises(ValueError, match="occupancy"):
        Atom("Cu", (0, 0, 0), occupancy=1.5)
    with pytest.raises(ValueError, match="3 fractional coordinates"):
        Atom("Cu", (0, 0))
