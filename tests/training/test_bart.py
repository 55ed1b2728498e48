from __future__ import annotations

import torch

from bastion.data import load_dataset
from bastion.defenses.bart import BaRT
from bastion.defenses.base import Defended
from bastion.training import StepContext, TrainConfig, fit
from bastion.training.bart import barrage_objective, bart_recipe
from tests.conftest import tiny_cnn


def ctx(step: int) -> StepContext:
    return StepContext(epoch=0, step=step, total_steps=10, keys=torch.arange(4), seed=3)


def test_objective_is_deterministic_per_step() -> None:
    model = tiny_cnn(input_shape=(1, 8, 8)).train()
    x, y = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    obj = barrage_objective(BaRT(k=3), variants=2, clean=True)
    l1, s1 = obj(model, x, y, ctx(5))
    l2, _ = obj(model, x, y, ctx(5))
    l3, _ = obj(model, x, y, ctx(6))
    assert torch.equal(l1, l2) and not torch.equal(l1, l3)
    assert set(s1) == {"acc", "acc_bart"}
    l1.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_recipe_metadata_and_wrap(mnist5k_test) -> None:
    model = tiny_cnn(input_shape=(1, 28, 28))
    objective, callbacks, meta, wrap = bart_recipe(model, k=4, val=mnist5k_test, device="cpu")
    d = meta["training"]["defense"]
    assert d["kind"] == "bart" and d["bart"]["k"] == 4 and meta["monitor"] == "val_bart_acc"
    assert BaRT.from_dict(d["bart"]).to_dict() == d["bart"]
    deployed = wrap(model)
    assert isinstance(deployed, Defended) and isinstance(deployed.defense, BaRT)
    assert len(callbacks) == 1


def test_a_short_fit_runs_and_reports_barrage_accuracy(tmp_path) -> None:
    ds = load_dataset("mnist-5k", "train").subset(slice(0, 256))
    val = load_dataset("mnist-5k", "test").subset(slice(0, 100))
    model = tiny_cnn(input_shape=(1, 28, 28))
    objective, callbacks, meta, _ = bart_recipe(model, k=2, val=val, variants=1)
    hist = fit(model, ds, config=TrainConfig(epochs=1, batch_size=64), objective=objective, val=val,
               callbacks=callbacks, monitor=meta["monitor"], out_dir=tmp_path)
    assert 0.0 <= hist.last["val_bart_acc"] <= 1.0 and "train_acc_bart" in hist.last
