"""LatticeFit: the classical baseline recovers a known strain through the simulator, and its
indexing survives missing and false peaks."""

import numpy as np
import pytest

from conftest import assert_recovers_known
from stemkit.physics.specimens import deformation_gradient
from stemkit.strain import LatticeFit, NotFittedError
from stemkit.strain.lattice_fit import choose_basis, fit_bases

HEX = np.array([[0.5, 0.25], [0.0, 0.25 * np.sqrt(3)]])  # columns g1, g2 (1/Å)


@pytest.fixture(scope="module")
def lattice_result(uniform_film):
    film, reference = uniform_film
    estimator = LatticeFit(reference=reference).fit(film.intensity)
    return estimator, estimator.transform(film.intensity)


def test_recovers_known_uniform_strain_and_rotation_with_signs(lattice_result, uniform_film):
    _, reference = uniform_film
    estimator, result = lattice_result
    assert estimator.symmetry_order_ == 6
    assert_recovers_known(result, reference)
    assert result["n_indexed"].values.min() >= 12


def test_result_is_a_dataset_on_the_scan(lattice_result, uniform_film):
    film, _ = uniform_film
    _, result = lattice_result
    assert set(result.data_vars) >= {"exx", "eyy", "exy", "rotation", "reference", "base"}
    assert result["exx"].dims == ("scan_y", "scan_x")
    assert result["rotation"].attrs["units"] == "degree"
    np.testing.assert_array_equal(result["scan_x"].values, film["scan_x"].values)


def lattice_points(basis: np.ndarray, order: int = 3) -> np.ndarray:
    h, k = np.meshgrid(np.arange(-order, order + 1), np.arange(-order, order + 1))
    return np.stack([h.ravel(), k.ravel()], 1) @ basis.T


def test_choose_basis_by_hand():
    basis = choose_basis(lattice_points(HEX))
    np.testing.assert_allclose(basis[:, 0], [0.5, 0.0])  # shortest and along +kx
    np.testing.assert_allclose(basis[:, 1], HEX[:, 1])  # 60°, g1 × g2 > 0


def test_fit_bases_survives_missing_and_false_peaks():
    rng = np.random.default_rng(1)
    truths = [deformation_gradient(e, -e / 2, 0.3 * e, r) for e, r in zip(np.linspace(-0.03, 0.03, 7),
                                                                          np.linspace(-6, 6, 7))]
    k = []
    for f in truths:
        points = lattice_points(np.linalg.inv(f).T @ HEX)
        points = points[rng.random(len(points)) > 0.3]  # 30 % missing
        false = rng.uniform(-1.2, 1.2, size=(4, 2))  # 4 false peaks
        noisy = np.concatenate([points + rng.normal(0, 1e-4, points.shape), false])
        k.append(np.pad(noisy, ((0, 60 - len(noisy)), (0, 0)), constant_values=np.nan))
    k = np.stack(k)
    bases, n_used, residual = fit_bases(k, np.isfinite(k[..., 0]), HEX)
    for f, b in zip(truths, bases):
        np.testing.assert_allclose(b, np.linalg.inv(f).T @ HEX, atol=2e-4)
    assert (n_used >= 20).all() and (residual < 1e-3).all()


def test_too_few_peaks_give_nan_not_an_error():
    k = np.full((1, 5, 2), np.nan)
    k[0, :2] = [[0.5, 0.0], [0.0, 0.0]]
    bases, n_used, _ = fit_bases(k, np.isfinite(k[..., 0]), HEX)
    assert np.isnan(bases).all() and n_used[0] < 3


def test_transform_before_fit_says_what_to_do(uniform_film):
    with pytest.raises(NotFittedError, match=r"\.fit\(data\)"):
        LatticeFit().transform(uniform_film[0].intensity)
