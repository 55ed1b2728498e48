import json
import shlex

import pytest
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()


def _flat(result) -> str:  # noqa: ANN001 - the output with rich's line wrapping undone
    return " ".join(result.output.split())


def test_evaluate_small_run_writes_results_csv_and_html(tmp_path):
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", "--model", "mnist-cnn", "--attacks", "fgsm,pgd", "--eps", "0.1,0.3",
                            "--steps", "5", "--n", "12", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["schema_version"] == 2 and res["data"]["n"] == 12
    assert [row["eps"] for row in res["rows"]] == [0.1, 0.1, 0.3, 0.3]
    assert "bastion evaluate" in res["command"]
    assert (out / "results.csv").read_text().startswith("attack,")
    html = (out / "report.html").read_text()
    assert "https://" not in html and "Grad-CAM" in html and "original | perturbation" in html


def test_evaluate_hide_probs_flags(tmp_path):
    r = runner.invoke(app, ["evaluate", "--defense", "hide-probs", "--attacks", "pgd", "--eps", "0.3", "--steps", "5",
                            "--n", "16", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    codes = {f["code"] for f in json.loads((tmp_path / "results.json").read_text())["flags"]}
    assert "onehot-outputs" in codes


def test_attack_writes_tensors_summary_and_figure(tmp_path):
    from safetensors.torch import load_file

    r = runner.invoke(app, ["attack", "--model", "mnist-cnn", "--attack", "pgd", "--eps", "0.3", "--steps", "20",
                            "--target", "least-likely", "--n", "6", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    t = load_file(str(tmp_path / "adversarial.safetensors"))
    assert t["x_adv"].shape == (6, 1, 28, 28) and "target" in t
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["attack"]["attack"] == "pgd" and s["success_rate"] >= 0.5
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_attack_without_eps_and_with_set_options(tmp_path):
    """JSMA has no eps (its budget is gamma): the default eps applies only to attacks that have one, and --set passes
    any other option (JSON values)."""
    r = runner.invoke(app, ["attack", "--attack", "jsma", "--set", "gamma=0.1", "--set", "output=logits", "--n", "4",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["attack"]["attack"] == "jsma" and s["attack"]["gamma"] == 0.1 and s["attack"]["output"] == "logits"
    r = runner.invoke(app, ["attack", "--attack", "fgsm", "--n", "2", "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["attack"]["eps"] == 0.3
    # the recorded command reproduces the run: a repeatable option once per value, nothing when not given
    assert "--set gamma=0.1 --set output=logits" in s["command"]
    assert "--set" not in json.loads((tmp_path / "f" / "summary.json").read_text())["command"]
    refused = runner.invoke(app, shlex.split(s["command"])[1:])  # into the same folder: its files are kept
    assert refused.exit_code == 2 and "pass --overwrite" in _flat(refused)
    again = runner.invoke(app, [*shlex.split(s["command"])[1:], "--overwrite"])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["attack", "--model", "nope"], "neither a shipped model"),
        (["attack", "--attack", "fgsm", "--steps", "3"], "does not take"),
        (["attack", "--attack", "warp"], "valid names"),
        (["attack", "--target", "cat"], "--target must be"),
        (["attack", "--attack", "pgd", "--set", "gamma=0.1"], "does not take ['gamma']"),
        (["attack", "--attack", "jsma", "--set", "gamma"], "--set takes KEY=VALUE"),
        (["attack", "--attack", "jsma", "--set", "gamma=0.1", "--set", "gamma=0.2"], "given twice"),
        (["attack", "--attack", "jsma", "--eps", "0.3"], "does not take ['eps']"),
        (["evaluate", "--eps", "a:b"], "cannot parse eps"),
        (["evaluate", "--data", "imagenet"], "valid names"),
        (["train", "--model", "vit", "--epochs", "1"], "valid names"),
        (["attack", "--attack", "fgsm", "--set", "eps=0.1", "--eps", "0.2"], "eps given twice"),
        (["attack", "--attack", "pgd", "--set", "early_stop=maybe"], "expects true or false"),
        (["attack", "--attack", "pgd", "--set", "bounds=5"], "expects a pair of numbers"),
        (["attack", "--attack", "pgd", "--set", "random_start=null"], "expects true or false"),
        (["attack", "--device", "nope"], "unknown device"),
        (["attack", "--model", "mnist-cnn-bart", "--defense", "bart"], "already has a defense"),
        (["evaluate", "--eps", "0.3:0:0.1"], "runs backwards"),
        (["evaluate", "--eps", "0:1:0.0001"], "at most 100"),
        (["evaluate", "--data", "blobs2d", "--split", "test", "--attacks", "fgsm", "--eps", "0.1", "--n", "4"],
         "the model cannot take x"),
        (["evaluate", "--defense", "hide-probs", "--adaptive", "bpda"], "input-transformation defense"),
        (["train", "--dropout", "2"], "--dropout must be in [0, 1)"),
        (["train", "--weight-decay", "-1"], "--weight-decay must be >= 0"),
        (["train", "--model", "logreg", "--hidden", "64"], "only apply to --model mnist-cnn"),
        (["train", "--split", "train[5848:]", "--epochs", "1"], "selects none"),
        (["demo", "--device", "cuda:7"], "device"),
        (["attack", "--attack", "fgsm", "--eps", "1.5", "--n", "4"], "whole [0, 1] pixel range"),
        (["attack", "--attack", "fgsm", "--eps", "1.000001", "--n", "4"], "got 1.000001;"),  # not "got 1"
        (["evaluate", "--attacks", "fgsm", "--eps", "0:2:0.5", "--n", "4"], "whole [0, 1] pixel range"),
        (["train", "--split", "train[abc]"], "cannot parse split 'train[abc]'"),  # rich markup ate "[abc]"
    ],
)
def test_clear_errors(args, message, tmp_path):
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert message in r.output


def test_train_then_resume(tmp_path):
    args = ["train", "--model", "logreg", "--data", "mnist-5k", "--split", "train[:300]", "--val-split", "test[:100]",
            "--epochs", "2", "--out", str(tmp_path), "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    from bastion.models import load_model

    m = load_model(tmp_path / "model.safetensors")
    assert m.meta.training["split"] == "train[:300]" and "bastion train" in m.meta.training["command"]
    r2 = runner.invoke(app, [*args, "--resume"])
    assert r2.exit_code == 0, r2.output
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) == 2
    r3 = runner.invoke(app, [*args[:-1], "--resume"])  # without --quiet: it says what it resumes
    assert r3.exit_code == 0, r3.output
    assert f"resuming the run in {tmp_path} (2 epochs done)" in " ".join(r3.output.split())


def test_train_from_a_defended_model_saves_a_loadable_classifier(tmp_path):
    """--init with a defended model starts from the classifier inside it; the saved file is a plain classifier
    (it used to be the wrapper's weights under 'model.*' keys, which load_model then refused)."""
    args = ["train", "--data", "mnist-5k", "--split", "train[:200]", "--val-split", "test[:100]", "--init",
            "mnist-cnn-bart", "--epochs", "1", "--out", str(tmp_path)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "starting from the classifier inside" in r.output
    from bastion.models import Classifier, load_model

    m = load_model(tmp_path / "model.safetensors")
    assert isinstance(m, Classifier) and m.meta.arch == "mnist-cnn"


def test_train_bart_takes_variants_and_clean(tmp_path):
    args = ["train", "--data", "mnist-5k", "--split", "train[:64]", "--val-split", "test[:40]", "--defense", "bart",
            "--k", "2", "--variants", "3", "--no-clean", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path),
            "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    from bastion.models import load_model

    d = load_model(tmp_path / "model.safetensors").meta.training["defense"]
    assert d["kind"] == "bart" and d["bart"]["k"] == 2 and d["variants"] == 3 and d["clean"] is False
    bad = runner.invoke(app, [*args[:-3], "--variants", "0", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "variants" in bad.output


def test_models_lists_shipped():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "mnist-cnn" in r.output


def test_attack_on_a_randomized_model_says_naive_runs_understate(tmp_path):
    r = runner.invoke(app, ["attack", "--model", "mnist-cnn-bart", "--attack", "fgsm", "--n", "2", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # the console wraps lines
    assert "this model is randomized" in text and "bastion evaluate" in text
    r = runner.invoke(app, ["attack", "--model", "mnist-cnn", "--attack", "fgsm", "--n", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0 and "this model is randomized" not in r.output


def test_a_bad_out_fails_before_any_work_and_nothing_is_overwritten(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for cmd in (["attack", "--n", "2"], ["evaluate", "--n", "4", "--eps", "0.1"], ["demo"]):
        r = runner.invoke(app, [*cmd, "--out", str(afile)])
        assert r.exit_code == 2 and "is an existing file" in _flat(r), r.output
    assert afile.read_text() == "keep me"
    run = tmp_path / "run"
    args = ["train", "--model", "logreg", "--split", "train[:100]", "--val-split", "test[:50]", "--epochs", "1",
            "--out", str(run), "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    before = (run / "model.safetensors").read_bytes()
    r = runner.invoke(app, args)  # the same folder again, without --resume: refused, the run kept
    assert r.exit_code == 2 and "already holds a training run" in _flat(r)
    assert (run / "model.safetensors").read_bytes() == before
    r = runner.invoke(app, [*args[:-3], "--split", "train[:60]", "--out", str(run), "--resume", "--quiet"])
    assert r.exit_code == 2 and "other training data" in _flat(r)


def test_attack_with_a_class_target_leaves_out_images_of_that_class(tmp_path):
    r = runner.invoke(app, ["attack", "--attack", "fgsm", "--eps", "0.2", "--target", "3", "--n", "10",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "1 of the 10 images are already of class 3" in _flat(r)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["n"] == 9


def test_models_prints_the_training_commands():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "trained with: bastion train" in _flat(r)



def test_train_and_evaluate_warn_about_one_class_slices_and_training_overlap(tmp_path):
    r = runner.invoke(app, ["train", "--split", "train[:200]", "--epochs", "1", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "holds only 1 of the 10 classes" in " ".join(r.output.split())
    r = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m" / "model.safetensors"), "--attacks", "fgsm,jsma",
                            "--eps", "0.1", "--n", "4", "--out", str(tmp_path / "e")])
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "can include its own training images" in out and "jsma has no radius" in out
    assert "attacked" in out and "cascade:" in out


def test_results_go_to_stdout_and_diagnostics_to_stderr():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "mnist-cnn:" in r.stdout and "0.99" in r.stdout  # `bastion models > file` works
    r = runner.invoke(app, ["train", "--split", "train[abc]"])
    assert r.exit_code == 2 and "cannot parse split" in r.stderr and r.stdout == ""


def test_evaluate_preset_autoattack_end_to_end(tmp_path):
    out = tmp_path / "aa"
    r = runner.invoke(app, ["evaluate", "--preset", "autoattack", "--steps", "5", "--n", "6", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    (h,) = res["headline"]
    assert h["name"] == "AutoAttack (standard)" and h["eps"] == 0.3 and h["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [row["attack"] for row in res["rows"]] == h["attacks"]
    first = res["per_image"]["broken_by"]["linf@0.3"]
    assert len(first) == 6 and sum(v is not None for v in first) == sum(h["broken_by"].values())
    assert "--preset autoattack" in res["command"]
    assert "AutoAttack (standard): robust accuracy" in _flat(r)
    assert "AutoAttack (standard): robust accuracy" in (out / "report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--preset", "autoattack", "--attacks", "pgd"], "leave out --attacks"),
    (["--preset", "autoattack", "--no-cascade"], "leave out --no-cascade"),
    (["--preset", "robustbench"], "--preset must be one of imagenet, autoattack"),
        (["--preset", "autoattack,autoattack"], "at most one"),
])
def test_evaluate_preset_refuses_what_it_cannot_honour(args, message, tmp_path):
    r = runner.invoke(app, ["evaluate", *args, "--n", "2", "--out", str(tmp_path / "x"), "--quiet"])
    assert r.exit_code == 2 and message in _flat(r)
    assert not (tmp_path / "x" / "results.json").exists()


def test_evaluate_preset_takes_a_preprocessing_and_an_evaluation_preset():
    from bastion.cli import _split_presets

    assert _split_presets(["imagenet", "autoattack"]) == ("imagenet", "autoattack")
    assert _split_presets(["autoattack,imagenet"]) == ("imagenet", "autoattack")
    assert _split_presets(["imagenet"]) == ("imagenet", None)
    assert _split_presets(None) == (None, None)
