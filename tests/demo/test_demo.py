"""`bastion demo`, the README's main job, end to end on a small held-out set."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.demo import claims as rules
from bastion.demo import experiments as ex

SECTIONS = ["standard_model", "gradient_attacks", "jsma_vs_fgsm", "adversarial_training", "regularization", "bart",
            "hide_probabilities", "class_activation_maps", "linear_models"]
RULES = {"jsma_vs_fgsm": rules.jsma_vs_fgsm, "hiding_probabilities": rules.masking_is_not_a_defense}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = CliRunner().invoke(app, ["demo", "--n", "10", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_demo_writes_a_report_with_every_section_and_claim(uninterrupted):
    tmp_path = uninterrupted
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


def test_an_interrupted_demo_keeps_its_finished_sections_and_resumes_to_the_same_numbers(uninterrupted, tmp_path,
                                                                                           monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # Ctrl-C during the seventh section
        m.setattr(ex, "hide_probabilities", interrupt)
        r = CliRunner().invoke(app, ["demo", "--n", "10", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 130 and "--resume" in r.output, r.output
    partial = json.loads((tmp_path / "results.json").read_text())
    assert partial["partial"] is True and list(partial["sections"]) == SECTIONS[:6]
    assert not (tmp_path / "report.html").exists()

    # another setting is refused, naming what differs; the partial demo is kept
    r = CliRunner().invoke(app, ["demo", "--n", "12", "--out", str(tmp_path), "--quiet", "--resume"])
    assert r.exit_code != 0 and "n 10 (now 12)" in " ".join(r.output.split()), r.output
    assert (tmp_path / "demo-partial.json").exists()

    r = CliRunner().invoke(app, ["demo", "--n", "10", "--out", str(tmp_path), "--resume"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "resuming the demo" in said and "6 of 9 sections done" in said
    resumed = json.loads((tmp_path / "results.json").read_text())
    full = json.loads((uninterrupted / "results.json").read_text())
    assert "partial" not in resumed and resumed["resumed_sections"] == SECTIONS[:6]
    assert untimed(resumed["sections"]) == untimed(full["sections"])  # every number but the timings
    assert untimed(resumed["claims"]) == untimed(full["claims"])
    assert not (tmp_path / "demo-partial.json").exists()
    html = (tmp_path / "report.html").read_text()
    assert "resumed after an interruption" in html and "hiding the probabilities" in html.lower()


def untimed(obj):
    """``obj`` without its timings (keys naming seconds or ms), which differ between any two runs."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if "seconds" not in k and "ms/" not in k}
    return [untimed(v) for v in obj] if isinstance(obj, list) else obj


def test_resume_without_an_interrupted_demo_says_so(tmp_path, monkeypatch):
    import bastion.demo

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the message is what is tested: no need to run the whole demo

    monkeypatch.setattr(bastion.demo, "run_demo", stop)
    r = CliRunner().invoke(app, ["demo", "--n", "10", "--out", str(tmp_path / "new"), "--resume"])
    assert "nothing to resume, running from the start" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--resume", "--overwrite"])
    assert r.exit_code != 0 and "pass one of them" in r.output
