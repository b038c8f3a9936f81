"""The transformer: shapes, masking, set semantics, and that it can learn."""

import numpy as np
import torch

from stemkit.orientation import ModelConfig, OrientationTransformer, SymmetryTable, symmetric_geodesic
from stemkit.physics import PointGroup, quaternion_to_matrix, random_quaternions


def batch(n=16, t=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, t, 5, generator=generator)
    mask = torch.rand(n, t, generator=generator) > 0.3
    return features, mask


def test_output_shapes_and_proper_rotations():
    model = OrientationTransformer(ModelConfig(n_phases=3, n_hypotheses=2)).eval()
    out = model(*batch())
    assert out["rotations"].shape == (16, 2, 3, 3)
    assert out["hypothesis_logits"].shape == (16, 2) and out["phase_logits"].shape == (16, 3)
    torch.testing.assert_close(torch.det(out["rotations"]), torch.ones(16, 2), atol=1e-5, rtol=0)


def test_padding_and_token_order_do_not_matter():
    model = OrientationTransformer().eval()
    features, mask = batch()
    reference = model(features, mask)
    noisy = features.clone()
    noisy[~mask] = 1e3  # whatever sits in the padding is ignored
    permutation = torch.randperm(features.shape[1], generator=torch.Generator().manual_seed(1))
    for f, m in ((noisy, mask), (features[:, permutation], mask[:, permutation])):
        out = model(f, m)
        torch.testing.assert_close(out["rotations"], reference["rotations"], atol=1e-4, rtol=0)
        torch.testing.assert_close(out["phase_logits"], reference["phase_logits"], atol=1e-4, rtol=0)


def test_a_pattern_without_tokens_gives_finite_output():
    model = OrientationTransformer().eval()
    features, mask = batch(n=4)
    mask[1] = False
    out = model(features, mask)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_it_learns_a_small_fixed_set():
    """Overfitting 32 fixed token sets to 32 orientations shows gradients reach every part."""
    torch.manual_seed(0)
    model = OrientationTransformer(ModelConfig(n_phases=1, d_model=64, feedforward=128, n_layers=2, n_hypotheses=1))
    features, mask = batch(n=32, seed=3)
    true = torch.as_tensor(quaternion_to_matrix(random_quaternions(32, seed=4)), dtype=torch.float32)
    table = SymmetryTable([PointGroup.from_name("-1")])
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(300):
        optimiser.zero_grad()
        loss = symmetric_geodesic(model(features, mask)["rotations"][:, 0], true, table).mean()
        loss.backward()
        optimiser.step()
        if step == 0:
            first = float(loss.detach())
    assert float(loss.detach()) < 0.25 * first
