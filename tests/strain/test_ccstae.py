"""CCSTAE: the warp refinement, the network's bounds, the cycle loss, and the noiseless-film acceptance."""

import dask.array as da
import numpy as np
import pytest
import torch

from conftest import assert_recovers_known
from stemkit.strain import CCSTAE, NotFittedError
from stemkit.strain.loss import cycle_loss, regularisers
from stemkit.strain.model import CCSTAENet, straight_through
from stemkit.strain.polar import polar_strain, deformation_from_reciprocal, rotation_matrix
from stemkit.strain.warp import apply_inverse, mask_points, refine, sample

SIZE = 81


def spot_lattice(matrix: np.ndarray = np.eye(2)) -> torch.Tensor:
    """Gaussian spots (σ 1.5 px) on a hexagonal lattice of spacing 10 px, reciprocal-mapped by ``matrix``."""
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    image = np.zeros((SIZE, SIZE))
    basis = matrix @ (10.0 * np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]]))
    for h in range(-5, 6):
        for k in range(-5, 6):
            gx, gy = basis @ [h, k]
            image += np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / (2 * 1.5**2))
    return torch.as_tensor(image, dtype=torch.float32)


def annulus(inner: float = 5.0, outer: float = 32.0) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    r = np.hypot(x, y)
    return (r >= inner) & (r <= outer)


def test_refine_recovers_a_known_affine():
    truth = np.linalg.inv(np.diag([1.015, 0.99])).T @ rotation_matrix(2.5)  # a reciprocal map
    image = spot_lattice(truth)[None]
    base = spot_lattice()[None]
    matrix, shift, residual = refine(image, base, torch.zeros(1, dtype=torch.long), annulus(),
                                     torch.eye(2)[None], torch.zeros(1, 2))
    np.testing.assert_allclose(matrix[0].numpy(), truth, atol=5e-4)
    np.testing.assert_allclose(shift[0].numpy(), 0.0, atol=0.02)
    assert float(residual[0]) < 0.1  # spots keep their shape while the warp scales them slightly
    exx, eyy, exy, rotation = polar_strain(deformation_from_reciprocal(matrix[0].double().numpy()))
    assert (exx, eyy) == pytest.approx((0.015, -0.01), abs=1e-3)
    assert float(rotation) == pytest.approx(2.5, abs=0.01)


def test_cycle_loss_is_zero_for_a_perfect_match_and_grows_with_misfit():
    base = spot_lattice()[None]
    points, flat = mask_points(annulus())
    identity = torch.eye(2)[None]
    assert float(cycle_loss(base, base, identity, torch.zeros(1, 2), points, flat)[0]) < 1e-6
    turned = torch.as_tensor(rotation_matrix(1.0), dtype=torch.float32)[None]
    assert float(cycle_loss(base, base, turned, torch.zeros(1, 2), points, flat)[0]) > 0.05


def test_cycle_loss_both_terms_see_the_true_warp():
    truth = torch.as_tensor(rotation_matrix(3.0), dtype=torch.float32)[None]
    base = spot_lattice()[None]
    image = spot_lattice(truth[0].numpy())[None]
    points, flat = mask_points(annulus())
    right = float(cycle_loss(image, base, truth, torch.zeros(1, 2), points, flat)[0])
    wrong = float(cycle_loss(image, base, torch.eye(2)[None], torch.zeros(1, 2), points, flat)[0])
    assert right < 0.02 < wrong
    # the backward term is the base warped back: it must land on the image
    back = sample(base[:, None], apply_inverse(truth, torch.zeros(1, 2), points))[0, 0]
    assert torch.corrcoef(torch.stack([back, image.reshape(-1)[flat]]))[0, 1] > 0.99


def test_affine_head_is_bounded_and_starts_at_the_identity():
    net = CCSTAENet(32, 2, max_strain=0.1, max_rotation=20.0, max_shift_px=2.0, encoder_size=16)
    logits, matrix, shift = net(torch.randn(3, 1, 16, 16))
    np.testing.assert_allclose(matrix.detach().numpy(), np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-7)
    extreme, moved = net.bounded_affine(torch.full((1, 6), 50.0))
    exx, eyy, exy, rotation = polar_strain(deformation_from_reciprocal(extreme[0].double().numpy()))
    assert abs(float(rotation)) <= 20.0 + 1e-4 and float(moved.abs().max()) <= 2.0 + 1e-6
    assert logits.shape == (3, 2)


def test_straight_through_is_hard_forward_and_soft_backward():
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    onehot = straight_through(logits)
    assert onehot.tolist() == [[1.0, 0.0, 0.0]]
    (onehot * torch.tensor([[0.0, 1.0, 0.0]])).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_regularisers():
    identity = torch.eye(2).repeat(4, 1, 1)
    gauge, balance = regularisers(identity, torch.zeros(4, 2), torch.full((4, 2), 0.5))
    assert float(gauge) == 0.0 and float(balance) == pytest.approx(-np.log(2))


@pytest.fixture(scope="module")
def fitted(uniform_film):
    film, reference = uniform_film
    estimator = CCSTAE(reference=reference, epochs=4, progress=False, seed=0, num_threads=1).fit(film.intensity)
    return estimator, estimator.transform(film.intensity)


def test_recovers_known_uniform_strain_and_rotation(fitted, uniform_film):
    """Acceptance: the noiseless film's known strain and rotation within 0.001 and 0.3°."""
    _, reference = uniform_film
    estimator, result = fitted
    assert estimator.symmetry_order_ == 6
    assert_recovers_known(result, reference)
    assert set(result.data_vars) >= {"exx", "eyy", "exy", "rotation", "base", "reference", "residual"}
    assert result.attrs["method"] == "stemkit.strain.CCSTAE"


def test_dask_input_streams_to_the_same_answer(fitted, uniform_film):
    film, _ = uniform_film
    estimator, result = fitted
    lazy = film.intensity.copy(data=da.from_array(film.intensity.values, chunks=(3, 9, -1, -1)))
    streamed = estimator.transform(lazy)
    for name in ("exx", "rotation"):
        np.testing.assert_allclose(streamed[name].values, result[name].values, atol=1e-5)


def test_automatic_reference_lies_in_one_region(fitted, uniform_film):
    film, reference = uniform_film
    estimator, _ = fitted
    estimator.reference = "auto"
    try:
        result = estimator.transform(film.intensity)
    finally:
        estimator.reference = reference
    chosen = result["reference"].values
    assert chosen.sum() == 9 and (chosen <= reference).all() or (chosen <= ~reference).all()
    assert np.nanmax(np.abs(result["exx"].values[chosen])) < 1e-3


def test_fit_is_seeded(uniform_film):
    film, _ = uniform_film
    small = dict(max_train_patterns=16, epochs=1, progress=False, seed=5, num_threads=1)
    a, b = CCSTAE(**small).fit(film.intensity), CCSTAE(**small).fit(film.intensity)
    for (name, x), y in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(x, y), name


def test_transform_before_fit_and_bad_parameters(uniform_film):
    film, _ = uniform_film
    with pytest.raises(NotFittedError, match=r"\.fit\(data\)"):
        CCSTAE().transform(film.intensity)
    with pytest.raises(ValueError, match="n_bases"):
        CCSTAE(n_bases=0).fit(film.intensity)
    with pytest.raises(ValueError, match="contract"):
        CCSTAE().fit(film.intensity.transpose("ky", "kx", "scan_y", "scan_x"))
