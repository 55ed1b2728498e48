"""What the commands write: checked before any work, never over an earlier run's files without --overwrite,
never through a symbolic link, atomically, and NaN results written as null with a warning (not a crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()

#: quick runs of each command, without --out
EVALUATE = ["evaluate", "--attacks", "fgsm", "--eps", "0.1", "--n", "4", "--quiet"]
ATTACK = ["attack", "--attack", "fgsm", "--n", "2"]
DEMO = ["demo", "--n", "10", "--quiet"]
TRAIN = ["train", "--model", "logreg", "--split", "train[:100]", "--val-split", "test[:50]", "--epochs", "1", "--quiet"]


def _flat(result) -> str:  # noqa: ANN001 - the output with rich's line wrapping undone
    return " ".join(result.output.split())


def _strict_json(path: Path) -> object:
    """Parse as real JSON: Python's json module would accept the NaN that JSON has no literal for."""
    def refuse(name: str) -> object:
        raise ValueError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def no_work(monkeypatch):
    """Make every command's real work fail loudly: a refusal must come before it."""
    import bastion.data
    import bastion.demo
    from bastion.eval import Evaluation

    def fail(*args, **kwargs):
        raise AssertionError("the command started working before refusing its --out")

    monkeypatch.setattr(Evaluation, "run", fail)
    monkeypatch.setattr(bastion.data, "load_dataset", fail)
    monkeypatch.setattr(bastion.demo, "heldout", fail)


@pytest.mark.parametrize("cmd, name", [(EVALUATE, "results.json"), (ATTACK, "summary.json"), (DEMO, "report.html"),
                                       (TRAIN, "metrics.json")])
def test_an_earlier_runs_output_is_kept_unless_overwrite(tmp_path, no_work, cmd, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("earlier")
    r = runner.invoke(app, [*cmd, "--out", str(out)])
    assert r.exit_code == 2, r.output
    advice = "pass --overwrite to replace it" if cmd is TRAIN else "pass --overwrite or choose another --out"
    assert f"{out} already holds {name} from an earlier run; {advice}" in _flat(r)
    assert "Traceback" not in r.output and (out / name).read_text() == "earlier"


def test_overwrite_replaces_an_earlier_run_and_removes_unfinished_temporary_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("earlier")
    (out / "results.json.k3j4h5.tmp").write_text("half a file from a killed run")
    (out / "notes.txt").write_text("the user's")
    r = runner.invoke(app, [*EVALUATE, "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert _strict_json(out / "results.json")["data"]["n"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.html", "results.csv", "results.json"]


@pytest.mark.parametrize("cmd, name", [(EVALUATE, "results.json"), (ATTACK, "adversarial.safetensors")])
def test_a_link_named_like_an_output_is_replaced_never_written_through(tmp_path, cmd, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("not bastion's")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    r = runner.invoke(app, [*cmd, "--out", str(out)])
    assert r.exit_code == 2 and "symbolic link" in _flat(r), r.output
    r = runner.invoke(app, [*cmd, "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "not bastion's"
    assert not (out / name).is_symlink() and (out / name).stat().st_size > 100


@pytest.mark.parametrize("cmd, name", [(EVALUATE, "results.json"), (ATTACK, "figure.png"), (DEMO, "report.html"),
                                       (TRAIN, "metrics.json")])
def test_a_folder_named_like_an_output_fails_before_any_work(tmp_path, no_work, cmd, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    r = runner.invoke(app, [*cmd, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert f"{out / name} is a folder where this command writes its {name}" in _flat(r)
    assert r.output.count("error:") == 1 and r.output.startswith("error:") and "Traceback" not in r.output
    assert [p.name for p in out.iterdir()] == [name]


def test_train_overwrite_starts_over_and_refuses_with_resume(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, [*TRAIN, "--out", str(out)]).exit_code == 0
    r = runner.invoke(app, [*TRAIN, "--out", str(out), "--resume", "--overwrite"])
    assert r.exit_code == 2 and "pass one of them" in _flat(r)
    r = runner.invoke(app, [*TRAIN, "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite to start over" in _flat(r)
    r = runner.invoke(app, [*TRAIN, "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert len(_strict_json(out / "metrics.json")["epochs"]) == 1


@pytest.fixture
def broken_model(tmp_path) -> Path:
    """A model whose logits overflow to inf (finite weights of 3e38): losses and some statistics are NaN."""
    from bastion.models import create_model, save_model

    model = create_model("logreg", seed=0)
    with torch.no_grad():
        model.net.fc.weight[:2] = 3e38
    return save_model(model, tmp_path / "broken.safetensors")


def test_nan_results_are_written_as_null_with_a_warning_about_the_model(tmp_path, broken_model):
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", "--model", str(broken_model), "--attacks", "fgsm,pgd", "--eps", "0.1",
                            "--steps", "3", "--n", "8", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    res = _strict_json(out / "results.json")
    assert res["rows"][0]["loss_clean"] is None and len(res["rows"]) == 2
    text = _flat(r)
    assert "NaN or infinite and are stored as null (rows[0].loss_clean" in text and "check the model" in text
    assert (out / "results.csv").exists() and (out / "report.html").exists()



@pytest.mark.parametrize("args", [
    ["attack", "--model", "no-such-model"],
    ["attack", "--target", "99", "--n", "2"],
    ["evaluate", "--split", "no-such-split", "--n", "4", "--quiet"],
    ["evaluate", "--data", "folder:/no/such/folder", "--quiet"],
    ["train", "--model", "logreg", "--defense", "no-such-defense", "--quiet"],
    ["train", "--model", "logreg", "--data", "no-such-data", "--quiet"],
    ["demo", "--n", "0", "--quiet"],
])
def test_a_failing_command_leaves_no_empty_folder(args, tmp_path):
    out = tmp_path / "runs" / "out"
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert not out.exists() and not out.parent.exists()


def test_an_out_folder_that_cannot_be_created_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(app, [*ATTACK, "--out", str(blocker / "sub")])
    assert r.exit_code == 2 and "is a file, not a folder" in _flat(r)
