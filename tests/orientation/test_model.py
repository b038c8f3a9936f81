"""The transformer: shapes, masking and set semantics (learning is tested in test_train.py)."""

import numpy as np
import torch

from stemkit.orientation import ModelConfig, OrientationTransformer


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


def test_length_sorted_batches_give_the_answers_of_one_padded_batch():
    """run_model trims each batch's padding; the model ignores padding, so nothing changes."""
    from stemkit.orientation import SymmetryTable, decode, run_model
    from stemkit.physics import PointGroup

    model = OrientationTransformer().eval()
    features, mask = batch(n=50, t=24, seed=5)
    mask[:20, 6:] = False  # a spread of lengths
    table = SymmetryTable([PointGroup.from_name("m-3m")] * 2)
    with torch.no_grad():
        reference = decode(model(features, mask), table)
    sorted_run = run_model(model, features.numpy(), mask.numpy(), table, batch_size=7)
    np.testing.assert_allclose(sorted_run.rotation, reference.rotation, atol=1e-5)
    np.testing.assert_allclose(sorted_run.confidence, reference.confidence, atol=1e-5)
    np.testing.assert_array_equal(sorted_run.phase, reference.phase)
