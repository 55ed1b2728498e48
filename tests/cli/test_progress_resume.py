"""Progress when output is redirected, and evaluations that survive an interruption (issue: what a new user
trips over)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion._cli_render import _progress_lines


def test_progress_lines_come_on_a_timer_without_updates(capsys):
    """A step that takes longer than the interval still shows the run is alive."""
    with _progress_lines(0.2) as cb:
        cb("evaluate", 1, 10)
        time.sleep(0.9)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[evaluate] 1/10")]
    assert len(lines) >= 3 and "elapsed" in lines[0] and "left" in lines[0]


EVALUATE = ["evaluate", "--model", "mnist-cnn", "--attacks", "fgsm,bim,pgd", "--eps", "0.05:0.3:0.05", "--n", "60",
            "--batch-size", "20", "--quiet", "--threads", "1"]


def _bastion(args: list[str], **kw):  # noqa: ANN003, ANN202
    return subprocess.Popen([sys.executable, "-m", "bastion", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


@pytest.mark.timeout(600)
def test_interrupted_evaluation_leaves_partial_results_and_resumes_to_the_same_numbers(tmp_path: Path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    p = _bastion([*EVALUATE, "--out", str(whole)])
    assert p.wait(timeout=600) == 0, p.stderr.read()
    p = _bastion([*EVALUATE, "--out", str(cut)])
    results = cut / "results.json"
    deadline = time.time() + 600
    while time.time() < deadline and not results.exists():  # interrupt once some rows are saved
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=120)
    err = p.stderr.read()
    partial = json.loads(results.read_text())
    if code == 0:  # the run finished before the signal arrived: nothing to resume
        pytest.skip("the evaluation finished before it could be interrupted")
    assert code == 130 and "--resume" in err
    assert partial["partial"] is True and 0 < len(partial["rows"]) < 18
    p = _bastion([*EVALUATE, "--out", str(cut), "--resume"])
    assert p.wait(timeout=600) == 0, p.stderr.read()
    a, b = json.loads((whole / "results.json").read_text()), json.loads(results.read_text())
    assert b["partial"] is False
    assert [r["accuracy"] for r in a["rows"]] == [r["accuracy"] for r in b["rows"]]
    assert a["per_image"]["rows"].keys() == b["per_image"]["rows"].keys()
    for key in a["per_image"]["rows"]:
        assert a["per_image"]["rows"][key]["robust"] == b["per_image"]["rows"][key]["robust"]


def test_resume_refuses_another_evaluation(tmp_path: Path):
    from typer.testing import CliRunner

    from bastion.cli import app

    runner = CliRunner()
    small = ["evaluate", "--model", "mnist-cnn", "--attacks", "fgsm", "--eps", "0.1", "--n", "10", "--quiet",
             "--out", str(tmp_path)]
    assert runner.invoke(app, small).exit_code == 0
    r = runner.invoke(app, [*small[:-2], "--eps", "0.2", "--out", str(tmp_path), "--resume"])
    assert r.exit_code == 2 and "another evaluation (other eps_grid" in r.output


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_long_run_with_redirected_output_says_it_is_alive_at_least_every_15_seconds(tmp_path: Path):
    """A real `bastion evaluate` of more than 30 s with stderr to a pipe (CI, nohup, a notebook): a progress line
    at least every 15 s from the first one on, and the first within 15 s of the thread note that starts the
    work."""
    args = ["evaluate", "--model", "mnist-cnn", "--attacks", "pgd", "--steps", "200", "--eps", "0.1,0.2,0.3",
            "--no-cascade", "--n", "400", "--threads", "1", "--out", str(tmp_path / "ev")]
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "bastion", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    stamps: list[tuple[float, str]] = []
    assert p.stderr is not None
    for line in p.stderr:
        stamps.append((time.monotonic() - t0, line.rstrip()))
    assert p.wait() == 0, stamps[-5:]
    start = next(t for t, ln in stamps if ln.startswith("using "))
    progress = [t for t, ln in stamps if ln.startswith("[")]
    assert stamps[-1][0] - start > 30, "the run should take over 30 s"
    assert progress and progress[0] - start <= 15, stamps[:5]
    gaps = [b - a for a, b in zip(progress, progress[1:], strict=False)]
    assert max(gaps) <= 15, (max(gaps), stamps)
