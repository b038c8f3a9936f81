"""Bloch-wave dynamical diffraction: conservation, the two-beam and kinematic limits, symmetry, absences."""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.data.units import wavelength_angstrom
from stemkit.physics import crystal, random_quaternions, simulate_kinematic
from stemkit.physics.bloch import potential_coefficients, propagate, simulate_bloch, structure_matrix
from stemkit.physics.specimens import zone_axis_rotation

ENERGY = 200.0


def intensity_of(patterns, index: int, hkl, thickness_index: int = 0) -> float:
    """The intensity of reflection ``hkl`` in pattern ``index`` (0 when it is not among the beams)."""
    match = np.all(patterns.hkl[index] == np.asarray(hkl), axis=1) & patterns.valid[index]
    return float(patterns.intensity[index, thickness_index][match].sum())


@pytest.mark.parametrize("name", ["Cu", "Cu2O"])
def test_intensity_is_conserved_without_absorption(name):
    patterns = simulate_bloch(crystal(name), random_quaternions(16, seed=3), beam_energy_kev=ENERGY,
                              thickness=[10, 100, 400, 1000], absorption=0.0)
    total = patterns.direct_beam + patterns.intensity.sum(axis=-1)
    np.testing.assert_allclose(total, 1.0, atol=1e-9)


def test_absorption_removes_electrons_steadily_with_thickness():
    patterns = simulate_bloch(crystal("Cu"), random_quaternions(8, seed=4), beam_energy_kev=ENERGY,
                              thickness=[0, 100, 300, 600, 1000], absorption=0.08)
    total = patterns.direct_beam + patterns.intensity.sum(axis=-1)
    np.testing.assert_allclose(total[:, 0], 1.0, atol=1e-12)
    assert np.all(np.diff(total, axis=1) < 0)
    # the mean absorption alone leaves exp(-2π κ U_0 t / K); Bloch waves on the atom rows lose more, between them less
    mean = np.exp(-2 * np.pi * 0.08 * crystal("Cu").structure_factor([0, 0, 0], ENERGY).real / (np.pi * crystal("Cu").volume)
                  * wavelength_angstrom(ENERGY) * 1000)
    assert np.all((total[:, -1] > 0.3 * mean) & (total[:, -1] < 3 * mean))


@pytest.mark.parametrize("s", [0.0, 0.002, -0.005, 0.01])
def test_two_beams_follow_the_analytic_pendellosung(s):
    cu = crystal("Cu")
    hkl = np.array([[[0, 0, 0], [2, 0, 0]]])
    matrix = structure_matrix(np.array([[0.0, s]]), hkl, cu, ENERGY)
    thickness = np.linspace(0, 1500, 61)
    amplitude = propagate(matrix, thickness)
    inverse_extinction = abs(potential_coefficients(cu, [2, 0, 0], ENERGY)) * wavelength_angstrom(ENERGY)
    effective = np.hypot(s, inverse_extinction)
    expected = (inverse_extinction / effective) ** 2 * np.sin(np.pi * thickness * effective) ** 2
    np.testing.assert_allclose(np.abs(amplitude[0, :, 1]) ** 2, expected, atol=1e-10)
    np.testing.assert_allclose(np.abs(amplitude[0, :, 0]) ** 2, 1 - expected, atol=1e-10)


@pytest.mark.parametrize("name", ["Cu", "Cu2O"])
def test_a_thin_foil_is_kinematic(name):
    xtal, orientations, thickness = crystal(name), random_quaternions(12, seed=5), 0.2
    dynamical = simulate_bloch(xtal, orientations, beam_energy_kev=ENERGY, thickness=[thickness], absorption=0.0)
    kinematic = simulate_kinematic(xtal, orientations, beam_energy_kev=ENERGY, k_max=2.0, thickness=thickness,
                                   dtype=np.float64)
    fraction = kinematic.beam_fraction()
    ratios = []
    for n in range(len(orientations)):
        lookup = {tuple(h): f for h, f, ok in zip(kinematic.hkl[n], fraction[n], kinematic.valid[n]) if ok}
        strong = dynamical.valid[n] & (dynamical.intensity[n, 0] > 1e-3 * dynamical.intensity[n, 0].max())
        ratios += [dynamical.intensity[n, 0, j] / lookup[tuple(dynamical.hkl[n, j])] for j in np.flatnonzero(strong)]
    assert len(ratios) > 50
    np.testing.assert_allclose(ratios, 1.0, atol=0.01)


def test_a_cubic_zone_axis_keeps_its_four_fold_symmetry():
    cu = crystal("Cu")
    patterns = simulate_bloch(cu, zone_axis_rotation(cu, (0, 0, 1)), beam_energy_kev=ENERGY,
                              thickness=[150, 450], n_beams=81)
    for t in range(2):
        family_200 = [intensity_of(patterns, 0, hkl, t) for hkl in ([2, 0, 0], [-2, 0, 0], [0, 2, 0], [0, -2, 0])]
        family_220 = [intensity_of(patterns, 0, hkl, t) for hkl in ([2, 2, 0], [-2, 2, 0], [2, -2, 0], [-2, -2, 0])]
        assert min(family_200) > 1e-3 and min(family_220) > 1e-4
        np.testing.assert_allclose(family_200, family_200[0], rtol=1e-6)
        np.testing.assert_allclose(family_220, family_220[0], rtol=1e-6)


def test_a_111_zone_axis_of_cuprite_keeps_its_three_fold_symmetry():
    cu2o = crystal("Cu2O")
    patterns = simulate_bloch(cu2o, zone_axis_rotation(cu2o, (1, 1, 1)), beam_energy_kev=ENERGY,
                              thickness=[300], n_beams=64)
    family = [intensity_of(patterns, 0, hkl) for hkl in ([1, -1, 0], [0, 1, -1], [-1, 0, 1])]
    assert min(family) > 1e-4
    np.testing.assert_allclose(family, family[0], rtol=1e-6)


def test_dynamical_intensities_depart_from_kinematic_in_thick_foils():
    cu = crystal("Cu")
    thin, thick = simulate_bloch(cu, zone_axis_rotation(cu, (0, 0, 1)), beam_energy_kev=ENERGY,
                                 thickness=[20, 300], absorption=0.0).intensity[0]
    # kinematically the 220/200 ratio does not depend on thickness at a zone axis (both s fixed)
    ratio = lambda row: row[np.argsort(-row)[4]] / row[np.argsort(-row)[0]]  # noqa: E731
    assert abs(ratio(thick) - ratio(thin)) > 0.05


def test_glide_forbidden_reflections_appear_by_double_diffraction_but_centring_absences_never():
    cu2o, cu = crystal("Cu2O"), crystal("Cu")
    orientations = random_quaternions(32, seed=6)
    patterns = simulate_bloch(cu2o, orientations, beam_energy_kev=ENERGY, thickness=[400])
    forbidden = patterns.valid & (np.abs(cu2o.structure_factor(patterns.hkl)) < 1e-9)  # e.g. 100 (glide)
    assert forbidden.any()
    assert patterns.intensity[:, 0][forbidden].max() > 1e-4
    # along [001] the glide planes contain the beam: 100 and 010 stay dark (Gjønnes-Moodie)
    zone = simulate_bloch(cu2o, zone_axis_rotation(cu2o, (0, 0, 1)), beam_energy_kev=ENERGY, thickness=[400])
    assert intensity_of(zone, 0, [1, 0, 0]) < 1e-12 and intensity_of(zone, 0, [2, 0, 0]) > 1e-3
    fcc = simulate_bloch(cu, orientations, beam_energy_kev=ENERGY, thickness=[400])
    parity = fcc.hkl % 2
    mixed = fcc.valid & ~(np.all(parity == parity[..., :1], axis=-1))
    assert not mixed.any()


def test_few_eligible_beams_are_padded_and_dark():
    patterns = simulate_bloch(crystal("Cu"), np.eye(3), beam_energy_kev=ENERGY, thickness=[100], k_max=0.6,
                              n_beams=32, absorption=0.0)
    assert patterns.valid.shape == (1, 31)
    assert 0 < patterns.valid.sum() < 31
    assert np.all(patterns.intensity[:, :, ~patterns.valid[0]] == 0)
    np.testing.assert_allclose(patterns.direct_beam + patterns.intensity.sum(-1), 1.0, atol=1e-9)


def test_single_precision_agrees_with_double():
    args = dict(beam_energy_kev=ENERGY, thickness=[200, 800], absorption=0.05)
    orientations = random_quaternions(8, seed=7)
    double = simulate_bloch(crystal("Cu2O"), orientations, **args)
    single = simulate_bloch(crystal("Cu2O"), orientations, precision="single", **args)
    np.testing.assert_allclose(single.intensity, double.intensity, atol=1e-4)


def test_at_thickness_and_dataset():
    patterns = simulate_bloch(crystal("Cu"), random_quaternions(3, seed=8), beam_energy_kev=300.0,
                              thickness=[50, 100, 200])
    intensity, direct = patterns.at_thickness([0, 2, 1])
    np.testing.assert_array_equal(intensity[1], patterns.intensity[1, 2])
    np.testing.assert_array_equal(direct, patterns.direct_beam[[0, 1, 2], [0, 2, 1]])
    each = simulate_bloch(crystal("Cu"), random_quaternions(3, seed=8), beam_energy_kev=300.0,
                          thickness=[[50], [200], [100]], chunk_size=2)
    np.testing.assert_allclose(each.intensity[:, 0], intensity, atol=1e-12)
    dataset = patterns.to_dataset()
    assert dataset.intensity.dims == ("pattern", "thickness", "peak")
    assert dataset.attrs["method"] == "bloch"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thickness": [-5]}, "thickness"),
        ({"thickness": []}, "thickness"),
        ({"thickness": [[100], [200]]}, "per orientation"),
        ({"n_beams": 1}, "n_beams"),
        ({"absorption": 1.5}, "absorption"),
        ({"beam_energy_kev": 0}, "beam_energy_kev"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"beam_energy_kev": ENERGY, "thickness": [100]} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate_bloch(crystal("Cu"), np.eye(3), **arguments)


def test_a_single_layer_is_refused_with_the_alternative():
    with pytest.raises(ValueError, match="simulate_kinematic"):
        simulate_bloch(crystal("graphene"), np.eye(3), beam_energy_kev=ENERGY, thickness=[3])


def test_a_polar_crystal_matches_multislice_not_its_inverse():
    """Zincblende ZnS 15 mrad off [011], 99.4 Å, 200 keV: abTEM 1.0.11 multislice (benchmarks/bloch/) gives the
    direct beam 0.4485 and the Friedel pair -11-1 / 1-11 0.0931 / 0.0783; the inverted crystal (the structure factor's
    sign convention taken the wrong way round) swaps the pair."""
    from stemkit.physics import Atom, Crystal

    a = 5.4093
    fcc = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    atoms = [Atom("Zn", p, 1.0, 0.65) for p in fcc] + [Atom("S", tuple(np.add(p, 0.25) % 1), 1.0, 0.55) for p in fcc]
    zns = Crystal(a, a, a, 90, 90, 90, atoms, name="ZnS", space_group="F-43m")
    rotation = np.array([[0.9999075949295697, -0.00964295391303219, -0.009582016593322569],
                         [-4.308919199400696e-05, 0.702610197929665, -0.7115749489045821],
                         [0.013594107013154824, 0.7115096086526649, 0.7025448576777477]])
    patterns = simulate_bloch(zns, rotation, beam_energy_kev=ENERGY, thickness=[99.44877049828219], k_max=4.0,
                              n_beams=1024, s_max=0.2, absorption=0.0)
    assert abs(patterns.direct_beam[0, 0] - 0.4485) < 0.003
    assert abs(intensity_of(patterns, 0, [-1, 1, -1]) - 0.0931) < 0.003
    assert abs(intensity_of(patterns, 0, [1, -1, 1]) - 0.0783) < 0.003
