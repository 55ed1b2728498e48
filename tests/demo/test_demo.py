"""`bastion demo`, the README's main job, end to end on a small held-out set."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bastion.cli import app
from bastion.demo import claims as rules

SECTIONS = ["standard_model", "gradient_attacks", "jsma_vs_fgsm", "adversarial_training", "regularization", "bart",
            "hide_probabilities", "class_activation_maps", "linear_models"]
RULES = {"jsma_vs_fgsm": rules.jsma_vs_fgsm, "hiding_probabilities": rules.masking_is_not_a_defense}


def test_demo_writes_a_report_with_every_section_and_claim(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--n", "10", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res["sections"]) == SECTIONS
    assert all(res["sections"][k] for k in SECTIONS)
    assert len(res["seconds_per_section"]) == len(SECTIONS) and res["n"] == 10
    claims = {c["key"]: c for c in res["claims"]}
    assert {"jsma_vs_fgsm", "bart_stops_attacks", "hiding_probabilities", "logreg_table"} <= set(claims)
    for c in claims.values():
        assert c["verdict"] in ("holds", "does not hold", "depends") and c["numbers"] and c["why"]
    # each verdict is the one its rule gives on the numbers of its row
    hp = res["sections"]["hide_probabilities"]
    assert claims["hiding_probabilities"]["verdict"] == rules.masking_is_not_a_defense(
        naive=hp["naive_pgd"], substitute=hp["substitute_pgd"])[0]
    b = res["sections"]["bart"]
    assert claims["bart_stops_attacks"]["verdict"] == rules.randomness_stops_attacks(
        naive=b["naive_pgd"], adaptive=b["adaptive_pgd"], clean=b["clean"], adaptive_ci=tuple(b["adaptive_ci95"]))[0]
    html = (tmp_path / "report.html").read_text()
    assert "the lecture says" in html and "BaRT" in html and "JSMA" in html and "https://" not in html
    assert "the seed's" not in html.lower() and "seed claims" not in html.lower()  # the lecture, not internal words
    assert (tmp_path / "predictions.png").stat().st_size > 1000
