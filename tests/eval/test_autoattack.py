"""Evaluation.autoattack: AutoAttack's cascade, its headline number and which attack broke each image."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.attacks import APGD, FAB, Square
from bastion.attacks.adaptive import EOT
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError
from bastion.eval import Evaluation, PerImage, RobustnessReport, worst_case
from tests.conftest import tiny_cnn


def test_the_standard_and_rand_suites():
    std = Evaluation.autoattack(0.3)
    assert [type(a) for a in std.suite] == [APGD, APGD, FAB, Square]
    ce, t, fab, square = std.suite
    assert (ce.loss, ce.targets, ce.steps, ce.restarts) == ("ce", 0, 100, 1)
    assert (t.loss, t.targets, t.steps) == ("dlr", 9, 100)
    assert (fab.targets, fab.steps, square.max_queries) == (9, 100, 5000)
    assert std.cascade and std.eps_grid == [0.3] and std.preset == "AutoAttack (standard)" and not std.adaptive
    assert [a.label for a in std.suite] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    l2 = Evaluation.autoattack(1.5, norm="l2")
    assert [a.label for a in l2.suite] == ["apgd-ce-l2", "apgd-t-l2", "fab-t-l2"] and "without Square" in str(l2.preset)
    model = tiny_cnn()
    rand = Evaluation.autoattack(0.3, version="rand", model=model)
    assert [a.label for a in rand.suite] == ["apgd-ce", "apgd-dlr"]
    (label, crafting), = rand.adaptive.items()
    assert label == "eot20" and isinstance(crafting, EOT) and crafting.n == 20
    with pytest.raises(ConfigError, match="model="):
        Evaluation.autoattack(0.3, version="rand")
    with pytest.raises(ConfigError, match="version"):
        Evaluation.autoattack(0.3, version="plus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cascade"):
        Evaluation.autoattack(0.3, cascade=False)


def _data(seed: int, n: int = 16) -> tuple[torch.nn.Module, ImageDataset]:
    g = torch.Generator().manual_seed(seed)
    model = tiny_cnn(seed=seed % 5)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = model(x).argmax(1).detach()
    y[::7] = (y[::7] + 1) % 10  # images the model gets wrong from the start
    return model, ImageDataset(name="random", split="all", images=x, labels=y, classes=tuple(map(str, range(10))),
                               indices=torch.arange(100, 100 + n))


@given(seed=st.integers(0, 2**16), eps=st.sampled_from([0.01, 0.02, 0.04]))
@example(seed=0, eps=0.01)  # FAB-T breaks an image the APGDs left
@example(seed=5, eps=0.01)  # APGD-T breaks an image APGD-CE left
@settings(max_examples=4, deadline=None)
def test_the_cascade_equals_running_the_attacks_in_order_on_every_image(seed, eps):
    """Per image, AutoAttack's worst case and the first attack that broke it equal running every attack on every
    image, in order: each attack runs only on the images still standing, and its result for an image does not
    depend on the other images of its batch."""
    model, data = _data(seed)
    aa = Evaluation.autoattack(eps, steps=1, targets=3, queries=60, checks=False, batch_size=5, seed=seed)
    every = Evaluation(suite=aa.suite, eps_grid=[eps], cascade=False, checks=False, batch_size=7, seed=seed)
    rep, full = aa.run(model, data), every.run(model, data)
    cas, all_rows = PerImage.from_dict(rep.per_image), PerImage.from_dict(full.per_image)
    assert torch.equal(worst_case(cas.clean, cas.rows), worst_case(all_rows.clean, all_rows.rows))
    first = []
    for i in range(len(data)):
        broke = [r.attack for r in all_rows.rows if bool(r.broken[i])]
        first.append(broke[0] if broke and bool(all_rows.clean[i] >= 0.5) else None)
    assert rep.per_image["broken_by"][f"linf@{eps}"] == first
    (h,) = rep.headline
    assert h["accuracy"] == pytest.approx(float(worst_case(cas.clean, cas.rows).mean()))
    assert h["broken_by"] == {a: first.count(a) for a in ["apgd-ce", "apgd-t", "fab-t", "square"]}
    assert sum(h["broken_by"].values()) + round(h["accuracy"] * len(data)) == int((cas.clean >= 0.5).sum())


def test_headline_is_written_read_back_and_shown():
    from bastion.viz.html import evaluation_html

    model, data = _data(3)
    rep = Evaluation.autoattack([0.05, 0.2], steps=3, targets=2, queries=20, checks=False).run(model, data)
    assert [h["eps"] for h in rep.headline] == [0.05, 0.2]
    assert rep.headline[0]["accuracy"] >= rep.headline[1]["accuracy"]
    again = RobustnessReport.from_json(rep.to_json())
    assert again.headline == json.loads(rep.to_json())["headline"] == rep.headline
    page = evaluation_html(rep)
    assert "AutoAttack (standard): robust accuracy" in page and "images it broke first" in page
    # an evaluation without a preset has no headline, and old reports read as before
    plain = Evaluation(suite=[APGD(eps=0.1, steps=2)], eps_grid=[0.1], checks=False).run(model, data)
    assert plain.headline is None and "robust accuracy" not in evaluation_html(plain).split("<h2>")[0]
    d = json.loads(plain.to_json())
    del d["headline"]
    assert RobustnessReport.from_dict(d).headline is None


def test_rand_version_crafts_through_eot_next_to_the_naive_rows():
    from tests.attacks.test_randomized import Noisy

    _, data = _data(1, n=6)
    noisy = Noisy(tiny_cnn(seed=1), sigma=0.1).eval()
    rep = Evaluation.autoattack(0.1, version="rand", model=noisy, eot_draws=3, steps=3, checks=False,
                                draws=4).run(noisy, data)
    assert rep.randomized and rep.draws == 4
    assert {(r.mode, r.attack) for r in rep.rows} == {("naive", "apgd-ce"), ("naive", "apgd-dlr"),
                                                      ("adaptive:eot3", "apgd-ce"), ("adaptive:eot3", "apgd-dlr")}
    (h,) = rep.headline
    assert h["name"] == "AutoAttack (rand)" and h["attacks"][2:] == ["adaptive:eot3/apgd-ce", "adaptive:eot3/apgd-dlr"]
    per = PerImage.from_dict(rep.per_image)
    assert h["accuracy"] == pytest.approx(float(worst_case(per.clean, per.rows).mean()))
