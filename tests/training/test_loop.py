import json

import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.models import create_model
from bastion.training import TrainConfig, accuracy, fit


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


def test_resuming_a_rolled_back_run_trains_no_further(tmp_path, small):
    train, _ = small
    scores = iter([0.5, 0.9, 0.1, 0.95, 0.95])

    def cb(m, epoch, metrics, history):
        s = next(scores)
        return {"score": s, **({"rollback": True} if s < 0.2 else {})}

    model = create_model("logreg", seed=0)
    h = fit(model, train.take(200), config=TrainConfig(epochs=5, batch_size=50), callbacks=[cb], monitor="score",
            out_dir=tmp_path)
    assert len(h.epochs) == 3 and h.epochs[-1]["rolled_back"]
    again = create_model("logreg", seed=0)
    h2 = fit(again, train.take(200), config=TrainConfig(epochs=5, batch_size=50), callbacks=[cb], monitor="score",
             out_dir=tmp_path, resume=True)
    assert len(h2.epochs) == 3  # the finished run is not continued past its rollback
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_resume_with_another_objective_or_model_options_is_refused(tmp_path, small):
    from bastion.training.adversarial import AdversarialTraining

    train, _ = small
    fit(create_model("mnist-cnn"), train.take(64), config=TrainConfig(epochs=1, batch_size=64), out_dir=tmp_path)
    with pytest.raises(ConfigError, match="other model options"):
        fit(create_model("mnist-cnn", dropout=0.5), train.take(64), config=TrainConfig(epochs=1, batch_size=64),
            out_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="another objective"):
        fit(create_model("mnist-cnn"), train.take(64), config=TrainConfig(epochs=1, batch_size=64), out_dir=tmp_path,
            resume=True, objective=AdversarialTraining(recipe="pgd", eps=0.3, steps=1))


def test_unfinished_checkpoint_writes_are_cleaned_on_start_and_resume(tmp_path, small):
    """A run killed while writing its checkpoint leaves a partial temporary file (up to 100 MB); starting or
    resuming the run removes it (and those of earlier versions, tmpXXXXXXXX.tmp), and the run goes on."""
    train, _ = small
    cfg = TrainConfig(epochs=2, batch_size=200, seed=3)
    with pytest.raises(_Kill):
        fit(create_model("logreg"), train, config=cfg, out_dir=tmp_path, callbacks=[_kill_after(1)])
    leftovers = [tmp_path / "checkpoint.pt.tmp", tmp_path / "checkpoint.pt.x7a9q2.tmp", tmp_path / "tmpab12_x9z.tmp"]
    for p in leftovers:
        p.write_bytes(b"\x00" * 1000)  # the first bytes of a checkpoint that was being written
    (tmp_path / "notes.tmp").write_text("the user's")
    h = fit(create_model("logreg"), train, config=cfg, out_dir=tmp_path, resume=True)
    assert len(h.epochs) == 2
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json", "notes.tmp"]
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"\x00")
    fit(create_model("logreg"), train, config=TrainConfig(epochs=1, batch_size=200), out_dir=tmp_path)  # a new start
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_metrics_are_never_written_through_a_link_and_nan_is_stored_as_null(tmp_path, small):
    train, _ = small
    victim = tmp_path / "victim.json"
    victim.write_text("not bastion's")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").symlink_to(victim)

    def diverged(model, epoch, metrics, history):
        return {"train_loss_extra": float("nan")}

    fit(create_model("logreg"), train, config=TrainConfig(epochs=1, batch_size=200), out_dir=run, callbacks=[diverged])
    assert victim.read_text() == "not bastion's"
    assert not (run / "metrics.json").is_symlink()
    saved = json.loads((run / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["epochs"][0]["train_loss_extra"] is None
