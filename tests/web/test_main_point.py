"""What the demo shows of bastion's main point (issue #26): the budget the slider sets (gamma for JSMA), a seed
that reproduces a result, the adaptive attack that breaks the randomized BaRT model where plain PGD does not,
the transfer attack that breaks the label-only model, and the adversarial image as a PNG."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from bastion.errors import ConfigError
from bastion.web import handlers, render
from bastion.web.context import DemoContext
from bastion.web.server import STATIC, create_app

#: gallery images 1-4 hold against plain PGD-20 at eps 0.2 on mnist-cnn-bart (seed 0) and fall to the adaptive attack
BART_IMAGES = (1, 2, 3, 4)


def attack(ctx: DemoContext, **kw: Any) -> dict[str, Any]:
    return handlers.run_attack({"model": "standard", "attack": "pgd", "eps": 0.3, "image": {"gallery": 4}, **kw}, ctx)


def decode_png(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    im = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))
    assert im.format == "PNG"
    return np.asarray(im)


def test_jsma_slider_is_labelled_gamma_not_eps(ctx: DemoContext) -> None:
    by = {a["key"]: a for a in handlers.list_attacks(ctx)["attacks"]}
    assert by["jsma"]["budget"] == "gamma" and by["jsma"]["budget_symbol"] == "\u03b3"
    assert by["jsma"]["eps_label"].startswith("gamma")
    assert by["fgsm"]["budget"] == "eps" and by["fgsm"]["budget_symbol"] == "\u03b5"
    out = attack(ctx, attack="jsma", eps=0.05)
    assert out["budget"] == "gamma" and out["budget_symbol"] == "\u03b3"
    assert not any("eps" in n for n in out["notes"]), out["notes"]
    # the page writes the budget's own symbol in the slider's label and the status line, never a fixed "eps"
    js = (STATIC / "app.js").read_text()
    assert 'r.budget_symbol' in js and '"eps-sym"' in js and '", eps "' not in js


def test_the_seed_reproduces_a_result_and_another_seed_changes_it(ctx: DemoContext) -> None:
    a, b, c = attack(ctx, seed=3), attack(ctx, seed=3), attack(ctx, seed=4)
    assert a["seed"] == 3 and a["adversarial"]["image"] == b["adversarial"]["image"]
    assert a["adversarial"]["image"] != c["adversarial"]["image"]  # PGD's random start comes from the seed
    p = {"model": "bart", "attack": "pgd-adaptive", "eps": 0.2, "image": {"gallery": 1}}
    x, y = handlers.run_attack({**p, "seed": 7}, ctx), handlers.run_attack({**p, "seed": 7}, ctx)
    assert x["adversarial"]["probs"] == y["adversarial"]["probs"] and x["download"] == y["download"]


@pytest.mark.parametrize("seed, match", [(-1, "seed must be an integer"), ("abc", "seed must be a number"),
                                         (1.5, "seed must be an integer"), (2**63, "out of range")])
def test_a_bad_seed_is_refused_by_the_api(ctx: DemoContext, seed: object, match: str) -> None:
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        r = client.post("/api/attack", json={"model": "standard", "attack": "fgsm", "eps": 0.1, "seed": seed,
                                             "image": {"gallery": 0}})
    assert r.status_code == 400 and match in r.json()["error"], r.text


def test_the_adaptive_attack_breaks_bart_where_plain_pgd_does_not(ctx: DemoContext) -> None:
    naive, adaptive = [], []
    for g in BART_IMAGES:
        p = {"model": "bart", "eps": 0.2, "seed": 0, "image": {"gallery": g}}
        naive.append(handlers.run_attack({**p, "attack": "pgd"}, ctx)["flipped"])
        out = handlers.run_attack({**p, "attack": "pgd-adaptive"}, ctx)
        adaptive.append(out["flipped"])
        assert out["mode"] == "adaptive" and out["draws"] == 8
        assert out["queries"] == 20 * handlers.ADAPTIVE_DRAWS  # 20 steps, each over ADAPTIVE_DRAWS draws
        assert out["norms"]["linf"] <= 0.2 + 1e-6
    assert sum(adaptive) >= 3 and sum(adaptive) > sum(naive), (naive, adaptive)


def test_the_adaptive_attack_is_only_for_randomized_models(ctx: DemoContext) -> None:
    models = {m["key"]: m for m in handlers.list_models(ctx)["models"]}
    assert models["bart"]["randomized"] and not models["standard"]["randomized"]
    with pytest.raises(ConfigError, match="randomized defended models"):
        attack(ctx, attack="pgd-adaptive")


def test_the_transfer_attack_breaks_the_label_only_model_without_querying_it(ctx: DemoContext) -> None:
    flips = 0
    for g in (0, 1, 2, 3):
        p = {"model": "label-only", "eps": 0.3, "seed": 0, "image": {"gallery": g}}
        assert not handlers.run_attack({**p, "attack": "pgd"}, ctx)["flipped"]  # zero gradient: nothing moves
        out = handlers.run_attack({**p, "attack": "pgd-transfer"}, ctx)
        assert out["queries"] == 0 and out["mode"] == "transfer"
        assert any("mnist-cnn-dropout" in n for n in out["notes"])
        flips += out["flipped"]
    assert flips >= 3
    src = ctx.transfer_source()
    assert src is not None and not src.training and all(p.grad is None for p in src.parameters())


def test_transfer_is_unavailable_without_a_source() -> None:
    c = DemoContext(transfer_source=None)
    by = {a["key"]: a for a in handlers.list_attacks(c)["attacks"]}
    assert not by["pgd-transfer"]["available"] and by["pgd"]["available"]
    with pytest.raises(ConfigError, match="no source model"):
        handlers.run_attack({"model": "standard", "attack": "pgd-transfer", "eps": 0.3, "image": {"gallery": 0}}, c)


def test_the_download_is_an_8_bit_png_of_the_adversarial_image(ctx: DemoContext) -> None:
    import torch

    out = attack(ctx, seed=1)
    d = out["download"]
    px = decode_png(d["image"])
    assert px.shape == (28, 28) and px.dtype == np.uint8
    assert d["filename"].endswith(".png") and "seed1" in d["filename"]
    assert "8-bit" in d["note"] and "1/255" in d["note"]
    # the same pixels as the attack's result, rounded to 8 bits (what the note says)
    lm = ctx.model("standard")
    x = ctx.gallery().images[4:5]
    from bastion.attacks import PGD

    spec = handlers.ATTACKS["pgd"]
    res = spec.build(0.3, None)(lm.model, x, ctx.gallery().labels[4:5], generator=torch.Generator().manual_seed(1))
    expect = render.to_uint8(render.image_array(res.x_adv[0]))
    assert isinstance(spec.build(0.3, None), PGD)
    assert np.array_equal(px, expect)
    assert np.abs(px / 255.0 - res.x_adv[0, 0].numpy()).max() <= 0.5 / 255 + 1e-6
    assert d["pred"] == out["adversarial"]["pred"]  # rounding does not undo this example


def test_the_accuracy_curve_shows_what_the_naive_attack_misses(ctx: DemoContext) -> None:
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        r = client.post("/api/curve", json={"model": "bart", "seed": 0})
        assert r.status_code == 200, r.text
        bart = r.json()
        bad = client.post("/api/curve", json={"model": "bart", "seed": -1})
        assert bad.status_code == 400 and "seed must be an integer" in bad.json()["error"]
        assert client.post("/api/curve", json={"model": "nope"}).status_code == 400
    assert bart["eps"] == list(handlers.CURVE_EPS) and bart["images"] == 30 and bart["draws"] == 8
    naive, adaptive = (ln["accuracy"] for ln in bart["lines"])
    assert "EOT" in bart["lines"][1]["label"]
    assert adaptive[-1] < naive[-1] - 0.15  # at eps 0.3 the adaptive attack breaks far more of the gallery

    label_only = handlers.accuracy_curve({"model": "label-only"}, ctx)
    flat, transfer = (ln["accuracy"] for ln in label_only["lines"])
    assert flat == [1.0] * len(flat) and transfer[-1] < 0.6  # zero gradient vs transfer
    assert handlers.accuracy_curve({"model": "label-only"}, ctx)["lines"] == label_only["lines"]  # reproducible
