"""`bastion demo`, the README's main job, end to end on a small held-out set."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bastion.cli import app

SECTIONS = ["standard_model", "gradient_attacks", "jsma_vs_fgsm", "adversarial_training", "bart",
            "hide_probabilities", "class_activation_maps", "toy_boundary"]


def test_demo_writes_a_report_with_every_section(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--n", "10", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    # one entry per section, each with its measurements (a section's results once also appeared a second
    # time, empty, under its display name)
    assert list(res["sections"]) == SECTIONS
    assert all(res["sections"][k] for k in SECTIONS)
    assert len(res["seconds_per_section"]) == len(SECTIONS) and res["n"] == 10
    assert 0.0 <= res["sections"]["bart"]["clean_accuracy"] <= 1.0
    # examples crafted on another model (all PGD steps, no early stop) do transfer to the one-hot model
    hp = res["sections"]["hide_probabilities"]
    assert hp["transfer_from_mnist_cnn_gap_0.3"] <= hp["pgd_naive_0.3"] - 0.2
    html = (tmp_path / "report.html").read_text()
    assert "BaRT" in html and "JSMA" in html and "https://" not in html
    assert (tmp_path / "predictions.png").stat().st_size > 1000
