"""The demo on your own model and images (``bastion serve --model ... --gallery folder:PATH``): RGB gallery and
uploads, class names, what is offered at a larger input size; and in a real browser."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bastion.cli import OwnModel, _own_demo
from bastion.errors import BastionError, ConfigError, InputShapeError
from bastion.web import handlers
from bastion.web.context import DemoContext
from bastion.web.server import create_app
from tests.own_data import CLASSES, MEAN, STD, write_factory, write_folder, write_weights

from .conftest import encode, live_server


def _context(tmp_path, **kw: Any) -> DemoContext:
    factory = write_factory(tmp_path)
    weights = write_weights(tmp_path / "w.safetensors")
    write_folder(tmp_path / "photos")
    own = OwnModel(mean=",".join(map(str, MEAN)), std=",".join(map(str, STD)),
                   input_size=kw.pop("input_size", None)).preprocessing()
    ctx = _own_demo(f"{factory}:build", weights=weights, own=own, gallery=f"folder:{tmp_path / 'photos'}", labels=None,
                    gallery_size=kw.pop("gallery_size", 6), device="cpu")
    assert ctx is not None
    return ctx


@pytest.fixture
def own_ctx(tmp_path) -> Iterator[DemoContext]:
    ctx = _context(tmp_path)
    yield ctx
    ctx.close()


def _photo(size: tuple[int, int] = (120, 90)) -> bytes:
    a = (np.random.default_rng(3).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    a[..., 0] = 230
    return encode(a, "JPEG", quality=92)


def test_the_demo_lists_your_model_gallery_and_class_names(own_ctx):
    models = handlers.list_models(own_ctx)["models"]
    assert [m["key"] for m in models] == ["yours"] and models[0]["available"]
    info = handlers.list_attacks(own_ctx)
    assert info["classes"] == list(CLASSES) and info["input_shape"] == [3, 64, 64]
    assert "RGB" in info["upload_hint"] and "centre-cropped to 64" in info["upload_hint"]
    gal = handlers.gallery(own_ctx)
    assert len(gal["images"]) == 6 and gal["source"].startswith("folder:") and "6 of 12 images" in gal["source"]
    assert {it["name"] for it in gal["images"]} == set(CLASSES)
    res = handlers.run_attack({"model": "yours", "attack": "pgd", "eps": 0.3, "steps": 5, "image": {"gallery": 1}},
                              own_ctx)
    assert res["clean"]["name"] in CLASSES and res["classes"] == list(CLASSES)
    assert res["label_name"] == CLASSES[handlers.gallery(own_ctx)["images"][1]["label"]]


def test_an_rgb_upload_goes_back_as_its_png_and_is_attacked(own_ctx):
    up = handlers.upload(_photo(), "image/jpeg", own_ctx)
    assert up["pixels"] is None and up["shape"] == [3, 64, 64] and up["original_size"] == [120, 90]
    im = Image.open(io.BytesIO(base64.b64decode(up["image"].split(",", 1)[1])))
    assert im.size == (64, 64) and im.mode == "RGB"
    res = handlers.run_attack({"model": "yours", "attack": "fgsm", "eps": 0.1, "image": {"png": up["image"]}}, own_ctx)
    assert res["label"] is None and res["clean"]["name"] in CLASSES
    small = Image.new("RGB", (32, 32))
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    wrong = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    with pytest.raises(InputShapeError, match="must be a 64x64 RGB PNG"):
        handlers.run_attack({"model": "yours", "attack": "fgsm", "eps": 0.1, "image": {"png": wrong}}, own_ctx)
    with pytest.raises(InputShapeError, match="not valid base64"):
        handlers.run_attack({"model": "yours", "attack": "fgsm", "eps": 0.1,
                             "image": {"png": "data:image/png;base64,@@@"}}, own_ctx)


def test_jsma_is_not_offered_at_a_large_input_size(tmp_path):
    ctx = _context(tmp_path, input_size="96")
    try:
        jsma = next(a for a in handlers.list_attacks(ctx)["attacks"] if a["key"] == "jsma")
        assert not jsma["available"] and "27,648 input values" in jsma["reason"]
        with pytest.raises(ConfigError, match="JSMA changes one pair of pixels per step"):
            handlers.run_attack({"model": "yours", "attack": "jsma", "eps": 0.01, "image": {"gallery": 0}}, ctx)
    finally:
        ctx.close()


def test_serve_options_are_checked(tmp_path):
    with pytest.raises(BastionError, match="needs --gallery"):
        _own_demo("x.py:build", weights=None, own=None, gallery=None, labels=None, gallery_size=6, device="cpu")
    with pytest.raises(BastionError, match="go with --model"):
        _own_demo(None, weights=None, own=None, gallery=f"folder:{tmp_path}", labels=None, gallery_size=6, device="cpu")
    assert _own_demo(None, weights=None, own=None, gallery=None, labels=None, gallery_size=6, device="cpu") is None


@pytest.mark.browser
def test_the_page_attacks_an_uploaded_photo_with_class_names(tmp_path):
    from .test_browser import CHROMIUM_ARGS, chromium_path

    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium) to run the browser test")
    from playwright.sync_api import sync_playwright

    ctx = _context(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(_photo())
    try:
        with live_server(create_app(ctx)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready=true]", timeout=30_000)
                assert page.locator('.tab[data-tab="draw"]').is_hidden()  # no digit drawing for an RGB model
                assert "RGB" in page.locator("#upload-hint").inner_text()
                page.locator('.tab[data-tab="upload"]').click()
                page.set_input_files("#file-input", str(tmp_path / "photo.jpg"))
                page.wait_for_selector('#results:not([data-seq="0"])', timeout=60_000)
                verdict = page.locator("#verdict").inner_text()
                assert any(c in verdict for c in CLASSES), verdict
                assert page.locator("#error").is_hidden() and errors == []
            finally:
                browser.close()
    finally:
        ctx.close()
