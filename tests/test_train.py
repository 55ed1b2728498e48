import json

import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.models import create_model
from bastion.train import TrainConfig, accuracy, fit


@pytest.fixture(scope="module")
def small():
    return load_dataset("mnist-5k", "train[:600]"), load_dataset("mnist-5k", "test[:200]")


CFG = TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=7)


class _Kill(Exception):
    pass


def _kill_after(epoch_to_die: int):
    def cb(model, epoch, metrics, history):
        if epoch == epoch_to_die:
            raise _Kill
        return {}
    return cb


def test_resumed_run_equals_uninterrupted(tmp_path, small):
    train, val = small
    a = create_model("mnist-cnn", dropout=0.25, seed=1)  # dropout: the global-RNG state must be resumed too
    ha = fit(a, train, config=CFG, val=val, out_dir=tmp_path / "a")

    b = create_model("mnist-cnn", dropout=0.25, seed=1)
    with pytest.raises(_Kill):  # killed in epoch 2, after epoch 1's checkpoint
        fit(b, train, config=CFG, val=val, out_dir=tmp_path / "b", callbacks=[_kill_after(1)])
    b2 = create_model("mnist-cnn", dropout=0.25, seed=1)
    hb = fit(b2, train, config=CFG, val=val, out_dir=tmp_path / "b", resume=True)

    for pa, pb in zip(a.state_dict().values(), b2.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert [e["val_acc"] for e in ha.epochs] == [e["val_acc"] for e in hb.epochs]
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert len(saved["epochs"]) == 3
    assert not b2.training


def test_training_learns_and_leaves_global_rng(small):
    train, val = small
    state = torch.get_rng_state()
    model = create_model("mnist-cnn", seed=0)
    before = accuracy(model, val)
    h = fit(model, train, config=TrainConfig(epochs=2, batch_size=32, lr=2e-3), val=val)
    assert torch.equal(torch.get_rng_state(), state)
    assert h.last["val_acc"] > max(0.7, before + 0.4)


def test_resume_with_other_config_is_refused(tmp_path, small):
    train, _ = small
    fit(create_model("logreg"), train, config=TrainConfig(epochs=1), out_dir=tmp_path)
    with pytest.raises(ConfigError, match="other settings; changed: epochs 1 -> 2"):
        fit(create_model("logreg"), train, config=TrainConfig(epochs=2), out_dir=tmp_path, resume=True)


def test_resume_on_other_data_or_another_architecture_is_refused(tmp_path, small):
    """A resumed run used to accept another split silently (and record it as the training data)."""
    train, _ = small
    fit(create_model("logreg"), train, config=TrainConfig(epochs=1), out_dir=tmp_path)
    with pytest.raises(ConfigError, match="other training data; changed: split"):
        fit(create_model("logreg"), train.subset(slice(0, 100)), config=TrainConfig(epochs=1), out_dir=tmp_path,
            resume=True)
    with pytest.raises(ConfigError, match="another architecture"):
        fit(create_model("mnist-cnn"), train, config=TrainConfig(epochs=1), out_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="empty"):
        fit(create_model("logreg"), train.subset([]), config=TrainConfig(epochs=1))


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"lr": -1.0}, {"optimizer": "rmsprop"}, {"schedule": "step"}])
def test_bad_config(kw):
    with pytest.raises(ConfigError):
        TrainConfig(**kw)
