"""The command line on your own model and images (issue #21): evaluate and attack end to end, and bad input as one
line with nothing written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bastion.cli import app
from bastion.models import preset
from tests.own_data import CLASSES, MEAN, STD, hand_accuracy, write_factory, write_folder, write_weights

runner = CliRunner()
RESNET = "tests/models/resnet18.py"
NORM = ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
QUICK = ["--attacks", "fgsm", "--eps", "0.01", "--quiet"]


def _flat(result) -> str:  # noqa: ANN001
    return " ".join(result.output.split())


@pytest.fixture
def world(tmp_path):
    """A factory file, its safetensors weights and a folder of 3 classes x 4 RGB 64x64 images."""
    factory = write_factory(tmp_path)
    weights = write_weights(tmp_path / "weights.safetensors")
    entries = write_folder(tmp_path / "photos")
    return factory, weights, entries


def _evaluate(out, *args):
    return runner.invoke(app, ["evaluate", *args, "--out", str(out)])


def test_evaluate_your_model_on_a_folder_matches_the_hand_computed_accuracy(world, tmp_path):
    factory, weights, entries = world
    expected = hand_accuracy(entries)
    assert 0 < expected < 1 and expected != hand_accuracy(entries, normalize=False)  # a test the normalization can fail
    out = tmp_path / "ev"
    r = _evaluate(out, "--model", f"{factory}:build", "--weights", str(weights), *NORM,
                  "--data", f"folder:{tmp_path / 'photos'}", *QUICK)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert res["data"]["n"] == 12 and res["data"]["name"] == f"folder:{tmp_path / 'photos'}"
    assert res["model"]["arch"] == "channel_model.py:build" and res["model"]["weights"] == "weights.safetensors"
    assert res["model"]["preprocessing"]["mean"] == list(MEAN) and res["model"]["preprocessing"]["classes"] == 3
    html = (out / "report.html").read_text()
    assert "channel_model.py:build on folder:" in html and "Examples" in html and "Sanity checks" in html


def test_evaluate_through_a_labels_csv_gives_the_same_accuracy(world, tmp_path):
    factory, weights, entries = world
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = ["file,label"]
    for i, (f, label) in enumerate(entries):
        (flat / f"img{i:02d}.png").write_bytes(f.read_bytes())
        rows.append(f"img{i:02d}.png,{CLASSES[label]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ev"
    r = _evaluate(out, "--model", f"{factory}:build", "--weights", str(weights), *NORM,
                  "--data", f"images:{flat}", "--labels", str(tmp_path / "labels.csv"), *QUICK)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["clean_accuracy"] == pytest.approx(hand_accuracy(entries), abs=1e-12) and res["data"]["n"] == 12


def test_a_torch_nn_resnet18_with_safetensors_weights_gets_the_full_report(world, tmp_path):
    """The path a user with trained weights takes: a ResNet-18 factory, its weights, a folder of images."""
    import importlib.util

    _, _, entries = world
    spec = importlib.util.spec_from_file_location("resnet18_for_test", RESNET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.build3()
    torch.manual_seed(7)
    with torch.no_grad():  # weights other than the factory's own, so loading them is what the test sees
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_file(net.state_dict(), str(tmp_path / "resnet.safetensors"))
    net.eval()
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255).permute(2, 0, 1)
                     for f, _ in entries])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        preds = net((x - mean) / std).argmax(1)
    expected = float((preds == torch.tensor([y for _, y in entries])).double().mean())
    out = tmp_path / "ev"
    r = _evaluate(out, "--model", f"{RESNET}:build3", "--weights", str(tmp_path / "resnet.safetensors"), *NORM,
                  "--data", f"folder:{tmp_path / 'photos'}", *QUICK)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert res["model"]["network"] == "ResNet18" and res["model"]["parameters"] > 11_000_000
    assert "Grad-CAM" in (out / "report.html").read_text()


def _one_error_line(r) -> str:  # noqa: ANN001
    """The one error line (after, at most, the "using N thread(s)" line that attack and train print first)."""
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    before = " ".join(lines[:-1])
    assert lines[-1].startswith("error: ") and (not before or before.startswith("using ")), r.output
    assert "error:" not in before and "Traceback" not in r.output, r.output
    return lines[-1]


def _nothing_written(out) -> bool:  # noqa: ANN001
    return not out.exists() or not any(out.iterdir())


def test_bad_input_is_one_line_and_writes_nothing(world, tmp_path):
    factory, weights, _ = world
    photos = f"folder:{tmp_path / 'photos'}"
    write_weights(tmp_path / "w10.safetensors", classes=10)
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(3, 8)}, str(tmp_path / "cnn.safetensors"))
    cases = [
        (["--model", f"{factory}:build", "--weights", str(tmp_path / "cnn.safetensors")],
         "weights do not match the model of channel_model.py:build (another architecture?): 2 tensors in the file, 2 in "
         "the model; missing 2.bias, 2.weight; unexpected conv1.weight, fc.weight"),
        (["--model", f"{factory}:build10", "--weights", str(weights)],
         "weights do not match the model of channel_model.py:build10: tensor '2.weight' has shape [3, 3] in the file, "
         "[10, 3] in the model"),
        (["--model", f"{factory}:broken"], "the factory raised RuntimeError: CUDA driver not found"),
        (["--model", f"{factory}:build10", "--weights", str(tmp_path / "w10.safetensors")],
         "the model returns 10 scores per image, but there are 3 classes (bluish, greenish, reddish: the class folders"),
        (["--model", f"{factory}:build", "--weights", str(weights), "--classes", str(tmp_path / "none.txt")],
         "none.txt: no such class-names file"),
        (["--model", "mnist-cnn", "--preset", "imagenet"], "mnist-cnn is a bastion model"),
        (["--model", f"{factory}:build", "--weights", str(weights), "--input-size", "2x3x4x5"],
         "--input-size takes a size in pixels"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        line = _one_error_line(_evaluate(out, *args, "--data", photos, *QUICK))
        assert message in line, line
        assert _nothing_written(out)


def test_a_non_image_file_is_skipped_by_name_and_counted(world, tmp_path):
    factory, weights, entries = world
    (tmp_path / "photos" / "reddish" / "notes.txt").write_text("shot on a phone")
    out = tmp_path / "ev"
    r = _evaluate(out, "--model", f"{factory}:build", "--weights", str(weights), *NORM,
                  "--data", f"folder:{tmp_path / 'photos'}", *QUICK)
    assert r.exit_code == 0, r.output
    assert "note: skipped 1 file(s) of folder:" in _flat(r) and "reddish/notes.txt (not a PNG, JPEG or WebP image)" in _flat(r)
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["n"] == 12 and res["clean_accuracy"] == pytest.approx(hand_accuracy(entries), abs=1e-12)


def test_a_grayscale_image_for_an_rgb_model_is_used_as_rgb_with_a_note(world, tmp_path):
    factory, weights, entries = world
    gray = tmp_path / "photos" / "greenish" / "gray.png"
    Image.fromarray(np.full((64, 64), 200, dtype=np.uint8)).save(gray)
    out = tmp_path / "ev"
    r = _evaluate(out, "--model", f"{factory}:build", "--weights", str(weights), *NORM,
                  "--data", f"folder:{tmp_path / 'photos'}", *QUICK)
    assert r.exit_code == 0, r.output
    assert ("note: 1 of the images of folder:" in _flat(r)
            and "grayscale images are used as RGB (three equal channels), for a 3-channel model (greenish/gray.png)"
            in _flat(r))
    res = json.loads((out / "results.json").read_text())
    everything = sorted([*entries, (gray, 1)], key=lambda e: (e[1], e[0].name))
    assert res["data"]["n"] == 13 and res["clean_accuracy"] == pytest.approx(hand_accuracy(everything), abs=1e-12)


def test_the_lecture_example_panda_to_gibbon_figure(tmp_path):
    """`bastion attack --model <imagenet model> --preset imagenet --image IMG --attack fgsm --eps 0.007`, here with a
    randomly initialised torch.nn ResNet-18 standing in for pretrained weights (none can be had offline)."""
    y, x = np.mgrid[0:240, 0:300]
    photo = np.stack([(np.sin(x / 17) + 1) * 100 + 30, (np.cos(y / 23) + 1) * 90 + 40, (x + y) % 255], -1)
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "panda.jpg", quality=90)
    out = tmp_path / "att"
    r = runner.invoke(app, ["attack", "--model", f"{RESNET}:build", "--preset", "imagenet", "--image",
                            str(tmp_path / "panda.jpg"), "--attack", "fgsm", "--eps", "0.007", "--target", "gibbon",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == "368" and summary["n"] == 1 and summary["data"] == str(tmp_path / "panda.jpg")
    names = set(preset("imagenet").classes)
    m = re.fullmatch(r"(.+) (\d+\.\d)% -> (.+) (\d+\.\d)%", summary["predictions"][0])
    assert m and m.group(1) in names and m.group(3) in names
    assert summary["predictions"][0] in _flat(r)
    t = load_file(str(out / "adversarial.safetensors"))
    assert t["x"].shape == (1, 3, 224, 224) and float((t["x_adv"] - t["x"]).abs().max()) <= 0.007 + 1e-6
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_attack_a_folder_of_your_images(world, tmp_path):
    factory, weights, _ = world
    out = tmp_path / "att"
    r = runner.invoke(app, ["attack", "--model", f"{factory}:build", "--weights", str(weights), *NORM, "--data",
                            f"folder:{tmp_path / 'photos'}", "--attack", "pgd", "--eps", "0.3", "--steps", "5",
                            "--n", "6", "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = load_file(str(out / "adversarial.safetensors"))
    assert t["x"].shape == (6, 3, 64, 64) and sorted(set(t["y"].tolist())) == [0, 1, 2]
    r = runner.invoke(app, ["attack", "--model", f"{factory}:build", "--weights", str(weights), "--data",
                            f"folder:{tmp_path / 'photos'}", "--target", "zebra", "--out", str(tmp_path / "z")])
    assert "--target must be a class number, a class name of the model (bluish, greenish, reddish)" in _one_error_line(r)


def test_train_your_model_on_your_folder_and_evaluate_its_weights(world, tmp_path):
    factory, weights, _ = world
    photos = f"folder:{tmp_path / 'photos'}"
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--model", f"{factory}:build", "--weights", str(weights), *NORM, "--data", photos,
                            "--val-split", photos, "--epochs", "3", "--batch-size", "4", "--lr", "0.05", "--out",
                            str(run), "--quiet"])
    assert r.exit_code == 0, r.output
    trained = load_file(str(run / "model.safetensors"))
    assert set(trained) == {"2.weight", "2.bias"} and not torch.equal(trained["2.weight"], torch.eye(3))
    val_acc = float(re.search(r"val accuracy (\d\.\d+)", r.output).group(1))
    out = tmp_path / "ev"
    r = _evaluate(out, "--model", f"{factory}:build", "--weights", str(run / "model.safetensors"), *NORM,
                  "--data", photos, *QUICK)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["clean_accuracy"] == pytest.approx(val_acc, abs=1e-4)
    r = runner.invoke(app, ["train", "--model", f"{factory}:build", "--init", "mnist-cnn", "--data", photos, "--out",
                            str(tmp_path / "r2")])
    assert "your own model starts from --weights" in _one_error_line(r)
