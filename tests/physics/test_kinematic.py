"""Batched kinematic diffraction: geometry, excitation errors, intensities, symmetry, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemkit.physics import (
    axis_angle_to_matrix,
    crystal,
    excitation_error,
    matrix_to_quaternion,
    random_quaternions,
    relativistic_factor,
    simulate_kinematic,
    wavelength_angstrom,
)

CU_A = 3.6149


def zone_axis(uvw, xtal=None) -> np.ndarray:
    """The rotation taking crystal direction [uvw] (direct lattice) onto the beam, +z."""
    basis = np.eye(3) if xtal is None else xtal.direct_basis
    n = basis @ np.asarray(uvw, dtype=float)
    n /= np.linalg.norm(n)
    axis = np.cross(n, [0.0, 0.0, 1.0])
    if np.linalg.norm(axis) < 1e-12:
        return np.eye(3)
    angle = math.degrees(math.acos(np.clip(n[2], -1, 1)))
    return axis_angle_to_matrix(axis, angle)


def column_of(patterns, hkl) -> int:
    """Column of reflection ``hkl`` in an unselected (all-reflections) simulation."""
    return int(np.flatnonzero(np.all(patterns.reflections.hkl == hkl, axis=1))[0])


def spots(patterns, row: int = 0) -> np.ndarray:
    """Valid (kx, ky, s, intensity) of one pattern."""
    valid = patterns.valid[row]
    columns = (patterns.kx, patterns.ky, patterns.excitation_error, patterns.intensity)
    return np.stack([column[row][valid] for column in columns], axis=1)


def assert_symmetric(points: np.ndarray, operation: np.ndarray) -> None:
    """The (kx, ky, s, I) set is mapped onto itself by a 2×2 ``operation`` of (kx, ky).

    Spots are matched on position and excitation error (reflections of different Laue zones
    can project onto the same (kx, ky)); matched spots must have equal intensities.
    """
    moved = np.column_stack([points[:, :2] @ operation.T, points[:, 2]])
    distance = np.linalg.norm(moved[:, None, :] - points[None, :, :3], axis=2)
    partner = distance.argmin(axis=1)
    np.testing.assert_allclose(distance[np.arange(len(points)), partner], 0, atol=1e-6)
    np.testing.assert_allclose(points[partner, 3], points[:, 3], rtol=1e-6)


def rotation_2d(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s], [s, c]])


MIRROR_X = np.diag([-1.0, 1.0])  # kx -> -kx
MIRROR_Y = np.diag([1.0, -1.0])


def zone_axis_pattern(name: str, uvw, **kwargs):
    xtal = crystal(name)
    options = dict(beam_energy_kev=300, k_max=2.0, excitation_error_width=0.02, s_max=0.06, dtype=np.float64)
    return simulate_kinematic(xtal, zone_axis(uvw, xtal)[None], **(options | kwargs))


# --------------------------------------------------------------------------- geometry and conventions
def test_quarter_turn_about_the_beam_takes_200_from_plus_kx_to_plus_ky():
    cu = crystal("Cu")
    R = np.stack([np.eye(3), axis_angle_to_matrix([0, 0, 1], 90)])
    patterns = simulate_kinematic(cu, R, beam_energy_kev=300, k_max=1.0, excitation_error_width=0.01, dtype=np.float64)
    j = column_of(patterns, [2, 0, 0])
    g = 2 / CU_A
    np.testing.assert_allclose([patterns.kx[0, j], patterns.ky[0, j]], [g, 0], atol=1e-12)
    np.testing.assert_allclose([patterns.kx[1, j], patterns.ky[1, j]], [0, g], atol=1e-12)


def test_spot_positions_are_the_rotated_g_vectors():
    cu2o = crystal("Cu2O")
    R = axis_angle_to_matrix(np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.2]]), [37.0, 123.0])
    patterns = simulate_kinematic(cu2o, R, beam_energy_kev=200, k_max=1.5, thickness=200.0, dtype=np.float64)
    g_lab = np.einsum("nij,mj->nmi", R, patterns.reflections.g)
    np.testing.assert_allclose(patterns.kx, g_lab[..., 0], atol=1e-12)
    np.testing.assert_allclose(patterns.ky, g_lab[..., 1], atol=1e-12)
    np.testing.assert_allclose(patterns.excitation_error, excitation_error(g_lab, 200), atol=1e-12)


# --------------------------------------------------------------------------- excitation error
@pytest.mark.parametrize("energy", [200.0, 300.0])
def test_excitation_error_at_the_001_zone_axis(energy):
    """Exact: s = sqrt(K² - g²) - K for g ⟂ beam; to first order -λ g²/2 (outside the sphere)."""
    cu = crystal("Cu")
    patterns = simulate_kinematic(cu, np.eye(3), beam_energy_kev=energy, k_max=1.0, excitation_error_width=0.01,
                                  dtype=np.float64)
    wavelength = wavelength_angstrom(energy)
    g = 2 / CU_A
    s = patterns.excitation_error[0, column_of(patterns, [2, 0, 0])]
    assert s == pytest.approx(math.sqrt(1 / wavelength**2 - g**2) - 1 / wavelength, rel=1e-12)
    assert s == pytest.approx(-wavelength * g**2 / 2, rel=1e-4)
    assert s < 0


def test_tilting_by_the_bragg_angle_satisfies_the_bragg_condition():
    """Rotating by θ_B = asin(λ g / 2) about +y tips 200 towards -z, onto the Ewald sphere."""
    cu = crystal("Cu")
    wavelength = wavelength_angstrom(300)
    g = 2 / CU_A
    bragg = math.degrees(math.asin(wavelength * g / 2))
    tilts = axis_angle_to_matrix([[0, 1, 0]] * 3, [bragg, 2 * bragg, -bragg])
    patterns = simulate_kinematic(cu, tilts, beam_energy_kev=300, k_max=1.0, excitation_error_width=0.01,
                                  dtype=np.float64)
    s_200 = patterns.excitation_error[:, column_of(patterns, [2, 0, 0])]
    s_minus_200 = patterns.excitation_error[:, column_of(patterns, [-2, 0, 0])]
    assert abs(s_200[0]) < 1e-12  # exact Bragg condition
    assert s_minus_200[0] == pytest.approx(-wavelength * g**2, rel=2e-3)  # the Friedel mate moves away
    assert s_200[1] == pytest.approx(wavelength * g**2 / 2, rel=2e-3)  # inside the sphere: positive
    assert s_200[2] == pytest.approx(-wavelength * g**2, rel=2e-3)


def test_excitation_error_function_handles_shapes():
    g = np.zeros((2, 3, 3))
    assert excitation_error(g, 300).shape == (2, 3)
    np.testing.assert_allclose(excitation_error([0, 0, 0.01], 300), -0.01, atol=1e-15)
    with pytest.raises(ValueError, match="length 3"):
        excitation_error(np.zeros(4), 300)


# --------------------------------------------------------------------------- intensities
def test_thickness_and_gaussian_shape_factors():
    """At [001], s(200) = s0: I = γ²|F|² sinc²(t s0), which is (2/π)² γ²|F|² for t = 1/(2|s0|);
    or γ²|F|² exp(-s0²/2σ²)."""
    cu = crystal("Cu")
    energy = 300.0
    wavelength = wavelength_angstrom(energy)
    g = 2 / CU_A
    s0 = math.sqrt(1 / wavelength**2 - g**2) - 1 / wavelength
    peak = abs(cu.structure_factor([2, 0, 0], beam_energy_kev=energy)) ** 2
    assert peak == pytest.approx(abs(cu.structure_factor([2, 0, 0])) ** 2 * relativistic_factor(energy) ** 2)
    common = dict(beam_energy_kev=energy, k_max=1.0, dtype=np.float64)
    foil = simulate_kinematic(cu, np.eye(3), thickness=1 / (2 * abs(s0)), **common)
    assert foil.intensity[0, column_of(foil, [2, 0, 0])] == pytest.approx(peak * (2 / math.pi) ** 2, rel=1e-9)
    thick = simulate_kinematic(cu, np.eye(3), thickness=1 / abs(s0), **common)  # first zero of sinc²
    assert thick.intensity[0, column_of(thick, [2, 0, 0])] == pytest.approx(0, abs=1e-9 * peak)
    gauss = simulate_kinematic(cu, np.eye(3), excitation_error_width=abs(s0), **common)
    assert gauss.intensity[0, column_of(gauss, [2, 0, 0])] == pytest.approx(peak * math.exp(-0.5), rel=1e-9)


def test_intensity_at_the_bragg_condition_is_the_structure_factor_squared():
    cu2o = crystal("Cu2O")
    g = 2 / 4.2696
    bragg = math.degrees(math.asin(wavelength_angstrom(300) * g / 2))
    patterns = simulate_kinematic(cu2o, axis_angle_to_matrix([0, 1, 0], bragg)[None], beam_energy_kev=300,
                                  k_max=1.0, thickness=500.0, dtype=np.float64)
    j = column_of(patterns, [2, 0, 0])
    assert patterns.intensity[0, j] == pytest.approx(abs(cu2o.structure_factor([2, 0, 0], 300)) ** 2, rel=1e-9)


# --------------------------------------------------------------------------- zone-axis symmetry
def test_cu_001_pattern_is_fourfold_with_mirrors():
    points = spots(zone_axis_pattern("Cu", [0, 0, 1]))
    # hk0 with h, k even and |g| <= 2: {200} 4, {220} 4, {400} 4, {420} 8, {440} 4, {600} 4, {620} 8, {640} 8.
    assert len(points) == 44
    for operation in (rotation_2d(90), MIRROR_X, MIRROR_Y, rotation_2d(45) @ MIRROR_X @ rotation_2d(-45)):
        assert_symmetric(points, operation)


def test_cu_011_pattern_is_twofold_with_mirrors_but_not_fourfold():
    points = spots(zone_axis_pattern("Cu", [0, 1, 1]))
    for operation in (rotation_2d(180), MIRROR_X, MIRROR_Y):
        assert_symmetric(points, operation)
    with pytest.raises(AssertionError):
        assert_symmetric(points, rotation_2d(90))
    # 200 lies along x (the [100] direction is perpendicular to the [011] beam) at |g| = 2/a.
    distances = np.hypot(points[:, 0], points[:, 1])
    on_x = np.abs(points[:, 1]) < 1e-9
    assert np.min(distances[on_x]) == pytest.approx(2 / CU_A)


def test_cu_111_zero_order_pattern_is_sixfold():
    points = spots(zone_axis_pattern("Cu", [1, 1, 1]))
    for operation in (rotation_2d(60), rotation_2d(120), MIRROR_X @ rotation_2d(30)):
        assert_symmetric(points, operation)
    inner = np.sort(np.hypot(points[:, 0], points[:, 1]))[:6]
    np.testing.assert_allclose(inner, math.sqrt(8) / CU_A)  # {220}


@pytest.mark.parametrize("name", ["graphene", "hBN", "MoS2"])
def test_hexagonal_c_axis_patterns_are_sixfold(name):
    points = spots(zone_axis_pattern(name, [0, 0, 1]))
    assert len(points) >= 12
    assert_symmetric(points, rotation_2d(60))


def test_zone_axis_patterns_contain_only_the_zero_order_laue_zone():
    patterns = zone_axis_pattern("Cu", [0, 0, 1])
    assert np.all(patterns.hkl[patterns.valid][:, 2] == 0)


@pytest.mark.parametrize("name", ["Cu", "Si", "Cu2O", "MoS2", "graphene"])
def test_symmetry_equivalent_orientations_give_identical_patterns(name):
    """R and R @ S diffract identically for every proper rotation S of the Laue class."""
    xtal = crystal(name)
    R = axis_angle_to_matrix([0.3, -0.5, 0.8], 27.0)
    orientations = R @ xtal.point_group.rotations
    patterns = simulate_kinematic(xtal, orientations, beam_energy_kev=300, k_max=1.5, thickness=300.0,
                                  dtype=np.float64)

    def canonical(i):
        table = np.stack([patterns.kx[i], patterns.ky[i], patterns.excitation_error[i], patterns.intensity[i]], 1)
        return table[np.lexsort(np.round(table[:, :3], 9).T)]

    reference = canonical(0)
    for i in range(1, len(orientations)):
        np.testing.assert_allclose(canonical(i), reference, atol=1e-9, rtol=1e-9)


# --------------------------------------------------------------------------- selection, batching, layout
def test_s_max_selection_keeps_exactly_the_excited_reflections_sorted_by_intensity():
    cu2o = crystal("Cu2O")
    q = random_quaternions(40, seed=3)
    common = dict(beam_energy_kev=300, k_max=1.5, excitation_error_width=0.01, dtype=np.float64)
    everything = simulate_kinematic(cu2o, q, **common)
    selected = simulate_kinematic(cu2o, q, s_max=0.02, **common)
    for i in range(len(q)):
        expected = set(np.flatnonzero(np.abs(everything.excitation_error[i]) < 0.02))
        assert set(selected.reflection_index[i][selected.valid[i]]) == expected
        intensity = selected.intensity[i][selected.valid[i]]
        assert np.all(np.diff(intensity) <= 0)
    assert np.all(selected.intensity[~selected.valid] == 0) and np.all(selected.kx[~selected.valid] == 0)
    assert selected.n_peaks == selected.valid.sum(axis=1).max()


def test_max_reflections_gives_a_fixed_width_of_the_strongest():
    cu = crystal("Cu")
    q = random_quaternions(25, seed=4)
    common = dict(beam_energy_kev=300, k_max=2.0, thickness=400.0, dtype=np.float64)
    everything = simulate_kinematic(cu, q, **common)
    top = simulate_kinematic(cu, q, max_reflections=10, **common)
    assert top.intensity.shape == (25, 10) and top.valid.all()
    np.testing.assert_allclose(top.intensity, -np.sort(-everything.intensity, axis=1)[:, :10], rtol=1e-9)
    wide = simulate_kinematic(cu, q, s_max=0.01, max_reflections=200, **common)
    assert wide.n_peaks == 200 and not wide.valid[:, -1].any()


@pytest.mark.parametrize("mode", [dict(), dict(s_max=0.03), dict(s_max=0.03, max_reflections=16),
                                  dict(max_reflections=16)], ids=["all", "s_max", "s_max+top", "top"])
def test_batched_equals_one_at_a_time_for_any_chunking(mode):
    cu2o = crystal("Cu2O")
    q = random_quaternions(23, seed=5)
    common = dict(beam_energy_kev=300, k_max=1.5, excitation_error_width=0.015, dtype=np.float64) | mode
    batched = simulate_kinematic(cu2o, q, chunk_size=5, **common)
    unchunked = simulate_kinematic(cu2o, q, chunk_size=1000, **common)
    np.testing.assert_array_equal(unchunked.reflection_index, batched.reflection_index)
    np.testing.assert_allclose(unchunked.intensity, batched.intensity, rtol=1e-9)
    for i in range(len(q)):
        single = simulate_kinematic(cu2o, q[i], **common)
        valid = batched.valid[i]
        assert valid.sum() == single.valid[0].sum()
        for name in ("kx", "ky", "excitation_error", "intensity", "reflection_index"):
            np.testing.assert_allclose(getattr(batched, name)[i][valid], getattr(single, name)[0][single.valid[0]],
                                       rtol=1e-9, atol=1e-12, err_msg=name)


def test_float32_agrees_with_float64():
    cu2o = crystal("Cu2O")
    q = random_quaternions(50, seed=6)
    common = dict(beam_energy_kev=300, k_max=2.0, excitation_error_width=0.01)
    exact = simulate_kinematic(cu2o, q, dtype=np.float64, **common)
    fast = simulate_kinematic(cu2o, q, **common)
    assert fast.kx.dtype == np.float32
    np.testing.assert_allclose(fast.kx, exact.kx, atol=2e-6)
    np.testing.assert_allclose(fast.excitation_error, exact.excitation_error, atol=2e-6)
    np.testing.assert_allclose(fast.intensity, exact.intensity, rtol=2e-3, atol=1e-4 * exact.intensity.max())


def test_quaternions_and_matrices_are_interchangeable():
    cu = crystal("Cu")
    q = random_quaternions(8, seed=7)
    from stemkit.physics import quaternion_to_matrix

    common = dict(beam_energy_kev=300, k_max=1.5, excitation_error_width=0.01, s_max=0.03)
    a = simulate_kinematic(cu, q, **common)
    b = simulate_kinematic(cu, quaternion_to_matrix(q), **common)
    np.testing.assert_array_equal(a.reflection_index, b.reflection_index)
    np.testing.assert_allclose(matrix_to_quaternion(quaternion_to_matrix(q)), q, atol=1e-12)


def test_hkl_and_dataset_layout():
    cu = crystal("Cu")
    patterns = simulate_kinematic(cu, random_quaternions(6, seed=8), beam_energy_kev=300, k_max=1.5,
                                  excitation_error_width=0.01, s_max=0.03, max_reflections=12)
    hkl = patterns.hkl
    assert hkl.shape == (6, 12, 3) and np.all(hkl[~patterns.valid] == 0)
    index = patterns.reflection_index[patterns.valid]
    np.testing.assert_array_equal(hkl[patterns.valid], patterns.reflections.hkl[index])
    ds = patterns.to_dataset()
    assert dict(ds.sizes) == {"pattern": 6, "peak": 12}
    assert ds["kx"].attrs["units"] == "1/Å" and ds.attrs["beam_energy_kev"] == 300 and ds.attrs["s_max"] == 0.03
    assert ds["valid"].dtype == bool


def test_layers_have_only_zero_l_reflections():
    graphene = crystal("graphene")
    patterns = simulate_kinematic(graphene, random_quaternions(4, seed=9), beam_energy_kev=80, k_max=1.5,
                                  thickness=3.35)
    # hk0 with |g| <= 1.5: {100} 6, {110} 6, {200} 6, {210} 12, {300} 6.
    assert np.all(patterns.reflections.hkl[:, 2] == 0) and len(patterns.reflections) == 36


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(), "exactly one shape factor"),
     (dict(thickness=100.0, excitation_error_width=0.01), "exactly one shape factor"),
     (dict(thickness=-1.0), "thickness must be positive"),
     (dict(thickness=100.0, s_max=0.0), "s_max must be positive"),
     (dict(thickness=100.0, max_reflections=0), "max_reflections"),
     (dict(thickness=100.0, k_max=-1.0), "k_max must be a positive")],
)
def test_bad_arguments_are_explained(kwargs, message):
    options = dict(beam_energy_kev=300.0, k_max=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        simulate_kinematic(crystal("Cu"), np.eye(3), **options)


def test_bad_orientation_shape_is_explained():
    with pytest.raises(ValueError, match=r"\(N, 3, 3\).*\(N, 4\)"):
        simulate_kinematic(crystal("Cu"), np.zeros((2, 5)), beam_energy_kev=300, k_max=1.0, thickness=100.0)


def test_beam_fraction_is_pi_t_over_extinction_distance_squared_at_the_bragg_condition():
    """Hand-computed: at s = 0 the kinematic fraction is (π t / ξ_g)², ξ_g = π V / (λ γ |F|)."""
    cu = crystal("Cu")
    energy, t = 300.0, 50.0
    wavelength = wavelength_angstrom(energy)
    # Put 111 along +x (normal to the beam), then tilt by θ_B about +y, as for 200 above.
    e1 = np.array([1.0, 1.0, 1.0]) / math.sqrt(3)
    e3 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
    to_x = np.stack([e1, np.cross(e3, e1), e3])
    bragg = math.degrees(math.asin(wavelength * math.sqrt(3) / CU_A / 2))
    orientation = axis_angle_to_matrix([0.0, 1.0, 0.0], bragg) @ to_x
    patterns = simulate_kinematic(cu, orientation[None], beam_energy_kev=energy, k_max=1.0, thickness=t,
                                  dtype=np.float64)
    j = column_of(patterns, [1, 1, 1])
    assert abs(patterns.excitation_error[0, j]) < 1e-12
    extinction = math.pi * cu.volume / (wavelength * abs(cu.structure_factor([1, 1, 1], energy)))
    assert 250 < extinction < 450  # Cu 111 at 300 kV: ξ ≈ 30-40 nm
    assert patterns.beam_fraction()[0, j] == pytest.approx((math.pi * t / extinction) ** 2, rel=1e-9)
    gaussian = simulate_kinematic(cu, np.eye(3), beam_energy_kev=energy, k_max=1.0, excitation_error_width=0.01)
    with pytest.raises(ValueError, match="needs a thickness"):
        gaussian.beam_fraction()


def test_single_layer_beam_fraction_uses_the_cell_area():
    graphene = crystal("graphene")
    patterns = simulate_kinematic(graphene, np.eye(3), beam_energy_kev=80, k_max=1.0, thickness=3.35,
                                  dtype=np.float64)
    area = math.sqrt(3) / 2 * 2.461**2
    wavelength = wavelength_angstrom(80)
    np.testing.assert_allclose(patterns.beam_fraction(), patterns.intensity * (wavelength / area) ** 2, rtol=1e-12)


@pytest.mark.parametrize(("name", "hkl", "xi_nm"), [("Al", [1, 1, 1], 55.6), ("Cu", [1, 1, 1], 28.6),
                                                    ("Au", [1, 1, 1], 18.3), ("Si", [2, 2, 0], 75.7)])
def test_extinction_distances_match_the_classic_tables(name, hkl, xi_nm):
    """ξ_g = π V / (λ γ |F_g|) at 100 kV for static atoms, against Hirsch et al. (1965) as tabulated in
    Williams & Carter's and Edington's textbooks; older scattering factors, hence 4 %."""
    from stemkit.physics import Atom, Crystal

    xtal = crystal(name)
    static = Crystal(*xtal.lattice_parameters, [Atom(atom.element, atom.position) for atom in xtal.atoms])
    xi = math.pi * static.volume / (wavelength_angstrom(100) * abs(static.structure_factor(hkl, 100)))
    assert xi / 10 == pytest.approx(xi_nm, rel=0.04)


@pytest.mark.parametrize("mode", [dict(), dict(s_max=0.03), dict(max_reflections=8)], ids=["all", "s_max", "top"])
def test_per_pattern_thickness_equals_one_thickness_at_a_time(mode):
    cu = crystal("Cu")
    q = random_quaternions(9, seed=10)
    thickness = np.linspace(50.0, 450.0, 9)
    common = dict(beam_energy_kev=200, k_max=1.5, dtype=np.float64) | mode
    batched = simulate_kinematic(cu, q, thickness=thickness, chunk_size=4, **common)
    np.testing.assert_array_equal(batched.thickness_angstrom, thickness)
    for i in range(len(q)):
        single = simulate_kinematic(cu, q[i], thickness=thickness[i], **common)
        valid = batched.valid[i]
        np.testing.assert_allclose(batched.intensity[i][valid], single.intensity[0][single.valid[0]], rtol=1e-9)
        np.testing.assert_allclose(batched.beam_fraction()[i][valid], single.beam_fraction()[0][single.valid[0]],
                                   rtol=1e-9)
    assert batched.to_dataset()["thickness_angstrom"].dims == ("pattern",)


def test_per_pattern_gaussian_width_and_shape_errors():
    cu = crystal("Cu")
    q = random_quaternions(3, seed=11)
    widths = np.array([0.005, 0.01, 0.02])
    batched = simulate_kinematic(cu, q, beam_energy_kev=300, k_max=1.5, excitation_error_width=widths)
    single = simulate_kinematic(cu, q[2], beam_energy_kev=300, k_max=1.5, excitation_error_width=0.02)
    np.testing.assert_allclose(batched.intensity[2], single.intensity[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"one value per orientation, shape \(3,\)"):
        simulate_kinematic(cu, q, beam_energy_kev=300, k_max=1.5, thickness=[100.0, 200.0])
    with pytest.raises(ValueError, match="thickness must be positive"):
        simulate_kinematic(cu, q, beam_energy_kev=300, k_max=1.5, thickness=[100.0, -1.0, 3.0])


def test_an_empty_batch_gives_empty_arrays():
    patterns = simulate_kinematic(crystal("Cu"), np.zeros((0, 4)), beam_energy_kev=300, k_max=1.5,
                                  thickness=100.0, max_reflections=5)
    assert patterns.kx.shape == (0, 5) and patterns.reflection_index.shape == (0, 5)
