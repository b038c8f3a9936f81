"""Training: the multiple-choice loss, a tiny model overfitting a tiny set, and exact checkpoint/resume."""

import numpy as np
import pytest
import torch

from stemkit.orientation import (
    Augmentation,
    ModelConfig,
    OrientationTransformer,
    SymmetryTable,
    Trainer,
    TrainingConfig,
    multiple_choice_loss,
    simulate_batch,
    symmetric_geodesic,
)
from stemkit.orientation.train import learning_rate_factor
from stemkit.orientation.weights import state_dict_equal
from stemkit.physics import PointGroup, quaternion_to_matrix, random_quaternions

TINY = ModelConfig(d_model=32, n_heads=2, n_layers=2, feedforward=64)


def test_the_winning_hypothesis_takes_the_loss_and_teaches_the_weights():
    table = SymmetryTable([PointGroup.from_name("m-3m")])
    true = torch.as_tensor(quaternion_to_matrix(random_quaternions(5, seed=0)), dtype=torch.float32)
    far = torch.as_tensor(quaternion_to_matrix(random_quaternions(5, seed=1)), dtype=torch.float32)
    rotations = torch.stack([far, true], dim=1)  # hypothesis 1 is right
    out = {"rotations": rotations, "hypothesis_logits": torch.zeros(5, 2), "phase_logits": torch.zeros(5, 1)}
    parts = multiple_choice_loss(out, true, torch.zeros(5, dtype=torch.long), table, relaxation=0.0)
    assert float(parts["orientation"]) < 5 * 2e-3  # the winner is (numerically) exact
    torch.testing.assert_close(parts["hypothesis"], torch.tensor(5 * np.log(2.0), dtype=torch.float32))
    relaxed = multiple_choice_loss(out, true, torch.zeros(5, dtype=torch.long), table, relaxation=0.1)
    expected = 0.9 * symmetric_geodesic(true, true, table).sum() + 0.1 * symmetric_geodesic(far, true, table).sum()
    torch.testing.assert_close(relaxed["orientation"], expected, atol=2e-3, rtol=1e-4)


def test_learning_rate_warms_up_then_decays():
    config = TrainingConfig(steps=1000, warmup_steps=100, final_lr_fraction=0.1)
    factors = [learning_rate_factor(s, config) for s in (0, 49, 99, 100, 550, 1000)]
    assert factors[0] == pytest.approx(0.01) and factors[2] == pytest.approx(1.0)
    assert factors[3] == pytest.approx(1.0) and factors[4] == pytest.approx(0.55) and factors[5] == pytest.approx(0.1)


def test_a_tiny_model_overfits_a_tiny_fixed_set():
    batch = simulate_batch(("Cu",), 32, np.random.default_rng(0), Augmentation(max_tokens=24))
    features, mask = torch.as_tensor(batch.features), torch.as_tensor(batch.mask)
    true = torch.as_tensor(batch.rotations, dtype=torch.float32)
    phase = torch.as_tensor(batch.phase)
    table = SymmetryTable([PointGroup.from_name("m-3m")])
    torch.manual_seed(0)
    model = OrientationTransformer(ModelConfig(n_phases=1, d_model=32, n_heads=2, n_layers=2, feedforward=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        optimizer.zero_grad()
        loss = multiple_choice_loss(model(features, mask), true, phase, table)["total"] / 32
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"


def trainer(folder, steps=6):
    torch.manual_seed(0)
    config = TrainingConfig(steps=steps, batch_size=48, chunk_size=16, warmup_steps=2, checkpoint_every=3,
                            validate_every=100, log_every=2, validation_size=32)
    return Trainer(OrientationTransformer(TINY), ("Cu", "Cu2O"), Augmentation(max_tokens=24), config,
                   checkpoint_dir=folder, progress=False)


def test_resuming_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.run()
    interrupted = trainer(tmp_path / "b")
    interrupted.run(until=3)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    resumed = trainer(tmp_path / "b")
    assert resumed.step == 3
    resumed.run()
    assert state_dict_equal(straight.model.state_dict(), resumed.model.state_dict())
    moments = [t.optimizer.state_dict()["state"][0]["exp_avg"] for t in (straight, resumed)]
    assert moments[0].equal(moments[1])
    assert [r["loss"] for r in straight.history if "loss" in r] == [r["loss"] for r in resumed.history if "loss" in r]
    assert set(straight.history[-1]["validation"]) >= {"median_deg", "within_5deg", "phase_accuracy"}


def test_resuming_with_other_settings_is_refused(tmp_path):
    trainer(tmp_path).run(until=3)
    torch.manual_seed(0)
    other = TrainingConfig(steps=6, batch_size=48, chunk_size=16, warmup_steps=2, learning_rate=5e-3,
                           validation_size=32)
    with pytest.raises(ValueError, match="learning_rate"):
        Trainer(OrientationTransformer(TINY), ("Cu", "Cu2O"), Augmentation(max_tokens=24), other,
                checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="n_phases"):
        Trainer(OrientationTransformer(TINY), ("Cu",), Augmentation(max_tokens=24), other, progress=False)


def test_warm_start_continues_from_the_given_weights(tmp_path):
    from stemkit.orientation import OrientationMapper

    small = dict(d_model=16, n_heads=2, n_layers=1, feedforward=32, max_tokens=24)
    first = OrientationMapper(("Cu", "Cu2O"), **small).fit(steps=2, batch_size=32, progress=False, warm_start=False,
                                                           validation_size=16, chunk_size=16)
    second = OrientationMapper(("Cu", "Cu2O"), **small)
    with pytest.raises(ValueError, match="pretrained"):
        second.fit(steps=1, warm_start=True)
    second.model_, second.weights_sha256_ = first.model_, "abc"
    second.fit(steps=1, batch_size=32, progress=False, warm_start=True, learning_rate=1e-12, validation_size=16,
               chunk_size=16, seed=7)
    assert state_dict_equal(first.model_.state_dict(), second.model_.state_dict()) or all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(first.model_.state_dict().values(),
                                                         second.model_.state_dict().values()))
    assert second.training_record_["warm_start_from"] == "abc"
