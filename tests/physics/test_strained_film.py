"""strained_film: the ground-truth strain and rotation are where the pixels put the spots.

Conventions pinned here (DESIGN.md): ``F = V R``, ``g' = F⁻ᵀ g``, ``exx, eyy, exy`` the
components of ``V - I`` (tensor shear), ``rotation`` right-handed about the beam, +kx
towards +ky, in degrees. 2H-WS2 at [001] has a along +x, so its reciprocal lattice holds
(2, -1, 0) at (√3 |b*|, 0) = (0.6342, 0) 1/Å on the +kx axis and (0, 1, 0) at (0, 0.3662).
"""

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import stemkit
from stemkit.physics import crystal
from stemkit.physics import specimens
from stemkit.physics.specimens import (
    deformation_gradient,
    lattice_mismatch,
    strain_from_deformation,
    strained_film,
    zone_axis_rotation,
)
from stemkit.preprocess import find_peaks

A_WS2, A_WSE2 = 3.1532, 3.2820
G_210 = 2 / A_WS2  # |2a* - b*| = √3 |b*| = 2 / a for a hexagonal lattice
NOISELESS = {"dose": 1e7, "background_fraction": 0.0}  # find_peaks wants counts; 1e7 makes the noise negligible
FIELDS = ("exx", "eyy", "exy", "rotation")


def reference_lattice(name: str = "WS2", order: int = 6) -> np.ndarray:
    """In-plane reciprocal lattice points h a* + k b* (1/Å), the direct beam excluded: built by hand."""
    basis = crystal(name).reciprocal_basis[:2, :2]
    h, k = np.meshgrid(np.arange(-order, order + 1), np.arange(-order, order + 1))
    points = np.stack([h.ravel(), k.ravel()]).T @ basis.T
    return points[np.hypot(*points.T) > 0]


def measured(peaks: xr.Dataset, y: int, x: int) -> np.ndarray:
    """Found peak positions (kx, ky) of one pattern, the direct beam excluded."""
    p = peaks.isel(scan_y=y, scan_x=x)
    k = np.stack([p.kx.values[p.valid.values], p.ky.values[p.valid.values]], axis=1).astype(float)
    return k[np.hypot(*k.T) > 0.02]


def fit_deformation(reference: np.ndarray, found: np.ndarray, guess: np.ndarray, tolerance: float = 0.02):
    """F from the least-squares map ``found ≈ M reference`` (M = F⁻ᵀ); spots assigned by ``guess`` (an F)."""
    predicted = reference @ np.linalg.inv(guess)  # rows g^T F^-1 = (F^-T g)^T
    distance = np.linalg.norm(predicted[:, None] - found[None], axis=-1)
    nearest, ok = distance.argmin(axis=1), distance.min(axis=1) < tolerance
    assert ok.sum() >= 12, f"only {ok.sum()} spots matched the prediction"
    transposed, *_ = np.linalg.lstsq(reference[ok], found[nearest[ok]], rcond=None)
    return np.linalg.inv(transposed.T).T


def assert_strain_close(fitted, expected) -> None:
    """Strains within 1e-3, rotation within 0.05°."""
    np.testing.assert_allclose(np.asarray(fitted)[:3], np.asarray(expected)[:3], atol=1e-3)
    assert abs(fitted[3] - expected[3]) <= 0.05, (fitted, expected)


def truth_at(ds: xr.Dataset, y: int, x: int) -> np.ndarray:
    return np.array([float(ds[name].values[y, x]) for name in FIELDS])


def spot_near(peaks: xr.Dataset, target, y: int = 0, x: int = 0) -> np.ndarray:
    """The found peak closest to ``target`` (kx, ky)."""
    found = measured(peaks, y, x)
    return found[np.linalg.norm(found - np.asarray(target), axis=1).argmin()]


def uniform_film(**fields) -> tuple[xr.Dataset, xr.Dataset]:
    film = strained_film(scan_shape=(1, 2), **({name: 0.0 for name in FIELDS} | fields), **NOISELESS)
    return film, find_peaks(film.intensity, threshold=8.0)


@pytest.fixture(scope="module")
def film():
    return strained_film(scan_shape=(6, 7), **NOISELESS)


# --- the deformation gradient itself -----------------------------------------------------------


def test_deformation_gradient_by_hand():
    np.testing.assert_allclose(deformation_gradient(0.02, -0.01, 0.005, 0.0), [[1.02, 0.005], [0.005, 0.99]])
    quarter = deformation_gradient(0.0, 0.0, 0.0, 90.0)
    np.testing.assert_allclose(np.linalg.inv(quarter).T @ [1.0, 0.0], [0.0, 1.0], atol=1e-15)  # +kx -> +ky
    turned_then_stretched = deformation_gradient(0.02, 0.0, 0.0, 90.0)  # V R, not R V
    np.testing.assert_allclose(turned_then_stretched, [[0.0, -1.02], [1.0, 0.0]], atol=1e-15)
    sheared = deformation_gradient(0.0, 0.0, 0.01, 0.0)
    np.testing.assert_allclose(sheared, sheared.T)  # symmetric shear, no rotation


def test_polar_decomposition_round_trips():
    rng = np.random.default_rng(1)
    values = [rng.uniform(-0.05, 0.05, 50) for _ in range(3)] + [rng.uniform(-170, 170, 50)]
    np.testing.assert_allclose(strain_from_deformation(deformation_gradient(*values)), values, atol=1e-12)


def test_zone_axis_and_mismatch_by_hand():
    np.testing.assert_allclose(zone_axis_rotation(crystal("WS2"), (0, 0, 1)), np.eye(3), atol=1e-12)
    cubic = zone_axis_rotation(crystal("Cu"), (1, 1, 0))
    np.testing.assert_allclose(cubic @ (np.array([1.0, 1.0, 0.0]) / np.sqrt(2)), [0, 0, 1], atol=1e-12)
    assert np.linalg.det(cubic) == pytest.approx(1.0)
    np.testing.assert_allclose(lattice_mismatch(crystal("WS2"), crystal("WSe2")), A_WSE2 / A_WS2 * np.eye(2),
                               atol=1e-12)


# --- the dataset ----------------------------------------------------------------------------------


def test_contract_shapes_and_default_fields(film):
    stemkit.validate(film.intensity)
    assert film.intensity.shape == (6, 7, 128, 128)
    for name in FIELDS:
        assert film[name].dims == ("scan_y", "scan_x")
    assert film.rotation.attrs["units"] == "degree" and "material" not in film
    # smooth fields of a few percent and a few degrees, not uniform
    assert 0.01 < float(np.abs(film.exx).max()) < 0.05 and float(film.exx.std()) > 1e-3
    assert 1.0 < float(np.abs(film.rotation).max()) < 6.0
    totals = film.intensity.sum(("ky", "kx")).values
    assert totals.mean() == pytest.approx(1e7, rel=1e-3)
    noiseless = strained_film(scan_shape=(2, 2))
    assert noiseless.intensity.dtype == np.float32
    np.testing.assert_allclose(noiseless.intensity.sum(("ky", "kx")), 1.0, atol=0.005)  # less what falls off


def test_fields_accept_numbers_arrays_and_functions():
    shape = (3, 4)
    array = np.linspace(0, 0.01, 12).reshape(shape)
    film = strained_film(scan_shape=shape, exx=0.01, eyy=array, exy=lambda y, x: 0.01 * x, rotation=2.0,
                         pattern_size=32)
    np.testing.assert_array_equal(film.exx, 0.01)
    np.testing.assert_array_equal(film.eyy, array)
    np.testing.assert_allclose(film.exy.values[0], 0.01 * (np.arange(4) + 0.5) / 4)
    np.testing.assert_array_equal(film.rotation, 2.0)


def test_deterministic_and_lazy_equals_eager(monkeypatch):
    monkeypatch.setattr(specimens, "_rows_per_chunk", lambda n_x, shape: 2)  # odd chunks: 2 + 2 + 1 rows
    kwargs = dict(scan_shape=(5, 3), pattern_size=48, dose=1e4, background_fraction=0.1, seed=3)
    eager = strained_film(**kwargs)
    xr.testing.assert_identical(eager, strained_film(**kwargs))
    lazy = strained_film(**kwargs, lazy=True)
    assert isinstance(lazy.intensity.data, da.Array) and lazy.intensity.data.numblocks[0] == 3
    np.testing.assert_array_equal(lazy.intensity.values, eager.intensity.values)
    assert not np.array_equal(strained_film(**(kwargs | {"seed": 4})).intensity.values, eager.intensity.values)


# --- the ground truth matches the pixels ----------------------------------------------------------


def test_ground_truth_strain_and_rotation_are_recovered_from_the_peaks(film):
    peaks = find_peaks(film.intensity, threshold=8.0)
    reference = reference_lattice()
    errors = []
    for y, x in [(0, 0), (0, 6), (2, 3), (3, 1), (5, 0), (5, 6), (4, 4)]:
        truth = truth_at(film, y, x)
        fitted = strain_from_deformation(fit_deformation(reference, measured(peaks, y, x),
                                                         deformation_gradient(*truth)))
        errors.append(np.array(fitted) - truth)
    errors = np.abs(errors)
    assert errors[:, :3].max() <= 1e-3, errors
    assert errors[:, 3].max() <= 0.05, errors


def test_uniform_stretch_along_x_by_hand():
    _, peaks = uniform_film(exx=0.02)
    np.testing.assert_allclose(spot_near(peaks, (G_210, 0.0)), (G_210 / 1.02, 0.0), atol=2e-3)
    b_star = 1 / (A_WS2 * np.sqrt(3) / 2)
    np.testing.assert_allclose(spot_near(peaks, (0.0, b_star)), (0.0, b_star), atol=2e-3)  # along y: unchanged


def test_uniform_stretch_along_y_by_hand():
    _, peaks = uniform_film(eyy=0.02)
    b_star = 1 / (A_WS2 * np.sqrt(3) / 2)
    np.testing.assert_allclose(spot_near(peaks, (0.0, b_star)), (0.0, b_star / 1.02), atol=2e-3)
    np.testing.assert_allclose(spot_near(peaks, (G_210, 0.0)), (G_210, 0.0), atol=2e-3)


def test_symmetric_shear_by_hand():
    """V = [[1, e], [e, 1]]: (g, 0) moves to g (1, -e) / (1 - e²); F is symmetric, so the rotation is 0."""
    film, peaks = uniform_film(exy=0.01)
    np.testing.assert_allclose(spot_near(peaks, (G_210, 0.0)), np.array([G_210, -0.01 * G_210]) / (1 - 1e-4),
                               atol=2e-3)
    fitted = strain_from_deformation(fit_deformation(reference_lattice(), measured(peaks, 0, 1), np.eye(2)))
    assert_strain_close(fitted, [0.0, 0.0, 0.01, 0.0])


@pytest.mark.parametrize("angle", [5.0, -5.0, 90.0])
def test_positive_rotation_turns_spots_from_kx_towards_ky(angle):
    """The +kx spot (2, -1, 0) goes to g (cos θ, sin θ): counter-clockwise for θ > 0 (ky up, kx right)."""
    _, peaks = uniform_film(rotation=angle)
    a = np.deg2rad(angle)
    expected = G_210 * np.array([np.cos(a), np.sin(a)])
    found = spot_near(peaks, expected)
    np.testing.assert_allclose(found, expected, atol=2e-3)
    if angle == 90.0:  # the hexagonal pattern turned by 90° has no spot left on the +kx axis at |g| = G_210
        assert np.linalg.norm(spot_near(peaks, (G_210, 0.0)) - (G_210, 0.0)) > 0.05  # 2 px
    fitted = strain_from_deformation(fit_deformation(reference_lattice(), measured(peaks, 0, 0),
                                                     deformation_gradient(0, 0, 0, angle)))
    assert fitted[3] == pytest.approx(angle, abs=0.05)


def test_strain_acts_in_the_lab_frame_after_the_rotation():
    """F = V R: the lattice is turned first, then stretched along lab x. With exx = 2 % and 90°, the
    +kx spot turns onto +ky, where the stretch along x leaves it alone; the b* spot turns onto -kx,
    where it shrinks by 1.02 (F = R V would do the opposite)."""
    _, peaks = uniform_film(exx=0.02, rotation=90.0)
    np.testing.assert_allclose(spot_near(peaks, (0.0, G_210)), (0.0, G_210), atol=2e-3)
    b_star = 1 / (A_WS2 * np.sqrt(3) / 2)
    np.testing.assert_allclose(spot_near(peaks, (-b_star, 0.0)), (-b_star / 1.02, 0.0), atol=2e-3)


def test_other_zone_axes():
    """Cu at [100]: lab x is the crystal's y, so (0, 2, 0) sits at (2 / a, 0) and a 2 % exx moves it to 1.02 less."""
    film = strained_film("Cu", scan_shape=(1, 1), zone_axis=(1, 0, 0), exx=0.02, eyy=0.0, exy=0.0, rotation=0.0,
                         thickness_nm=20.0, **NOISELESS)
    g_020 = 2 / 3.6149
    peaks = find_peaks(film.intensity, threshold=8.0)
    np.testing.assert_allclose(spot_near(peaks, (g_020, 0.0)), (g_020 / 1.02, 0.0), atol=2e-3)
    np.testing.assert_allclose(spot_near(peaks, (0.0, g_020)), (0.0, g_020), atol=2e-3)


def test_heterostructure_truth_is_relative_to_the_first_crystal():
    film = strained_film(scan_shape=(2, 4), heterostructure=("WS2", "WSe2"), interface="half",
                         **{name: 0.0 for name in FIELDS}, **NOISELESS)
    assert film.material.values.tolist() == [["WS2", "WS2", "WSe2", "WSe2"]] * 2
    mismatch = A_WSE2 / A_WS2 - 1  # 0.04085
    np.testing.assert_allclose(film.exx.values, [[0, 0, mismatch, mismatch]] * 2, atol=1e-12)
    np.testing.assert_allclose(film.eyy, film.exx)
    np.testing.assert_allclose(film.rotation, 0.0, atol=1e-12)
    peaks = find_peaks(film.intensity, threshold=8.0)
    np.testing.assert_allclose(spot_near(peaks, (G_210, 0), 0, 3), (G_210 / (1 + mismatch), 0.0), atol=2e-3)
    fitted = strain_from_deformation(fit_deformation(reference_lattice(), measured(peaks, 1, 2),
                                                     (1 + mismatch) * np.eye(2)))
    assert_strain_close(fitted, [mismatch, mismatch, 0.0, 0.0])


def test_heterostructure_with_strain_fields_combines_them():
    film = strained_film(scan_shape=(5, 5), heterostructure=("WS2", "WSe2"), interface="disk", pattern_size=32)
    inside = film.material.values == "WSe2"
    assert inside[2, 2] and not inside[0, 0]
    expected = strain_from_deformation(
        deformation_gradient(*(specimens._field(None, n, (5, 5)) for n in FIELDS)) * (A_WSE2 / A_WS2))
    for name, value in zip(FIELDS, expected):
        np.testing.assert_allclose(film[name].values[inside], value[inside], atol=1e-10)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="shape"):
        strained_film(scan_shape=(3, 3), exx=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not percent"):
        strained_film(scan_shape=(3, 3), exx=2.0)
    with pytest.raises(ValueError, match="conflicts"):
        strained_film("MoS2", scan_shape=(3, 3), heterostructure=("WS2", "WSe2"))
    with pytest.raises(ValueError, match="structure type"):
        strained_film(scan_shape=(3, 3), heterostructure=("WS2", "Cu"))
    with pytest.raises(ValueError, match="interface"):
        strained_film(scan_shape=(3, 3), heterostructure=("WS2", "WSe2"), interface="diagonal")
    with pytest.raises(ValueError, match="NaN"):
        strained_film(scan_shape=(3, 3), rotation=np.nan)
    with pytest.raises(ValueError, match="zone_axis"):
        strained_film(scan_shape=(3, 3), zone_axis=(0, 0, 0))
