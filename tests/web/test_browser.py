"""End to end in a real headless browser: Debian's ``chromium`` driven by Playwright against a server on
127.0.0.1. Pick a gallery image, run FGSM at eps 0.3, check that the displayed prediction flips and the
probability bars change, and save a screenshot (in $BASTION_TEST_ARTIFACTS or a temporary folder).

Playwright's own browser download does not work offline, so the test points ``executable_path`` at the
system Chromium (``apt-get install chromium``); it skips, saying why, only when there is none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.web.context import DemoContext
from bastion.web.server import create_app

from .conftest import digit_array, encode, live_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
#: screenshots of each run: a temporary folder unless $BASTION_TEST_ARTIFACTS names one (tests write nothing into
#: the checkout but the README's screenshots, and those only when asked)
ARTIFACTS = Path(os.environ.get("BASTION_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "bastion-test-artifacts")
README_SHOT = ROOT / "docs" / "web_demo.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: gallery image 4 is a "1" that FGSM at eps 0.3 turns into another digit (and that eps 0.1 does not)
FLIPS = 4


def chromium_path() -> str | None:
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.path.exists(cand):
            return cand
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium) to run the browser test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; it is in the [test] extra)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    ctx = DemoContext()
    try:
        with live_server(create_app(ctx)) as url:
            yield url
    finally:
        ctx.close()


def bars(page: Any, which: str) -> list[tuple[str, str]]:
    rows = page.locator(f"#bars-{which} .bar")
    return [(rows.nth(i).get_attribute("data-cls"), rows.nth(i).get_attribute("data-p")) for i in range(rows.count())]


def test_fgsm_flips_the_displayed_prediction(browser: Any, server_url: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server_url + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        assert page.locator(".thumb").count() == 30

        page.click(f'.thumb[data-id="{FLIPS}"]')
        page.select_option("#attack", "fgsm")
        page.wait_for_selector(f'#results[data-eps="0.10"][data-attack="fgsm"][data-gallery="{FLIPS}"]', timeout=30_000)
        idle(page)
        clean_pred = page.inner_text("#pred-clean")
        before = bars(page, "adv")
        assert page.get_attribute("#results", "data-flipped") == "false"

        page.locator("#eps").fill("0.3")
        page.wait_for_selector('#results[data-eps="0.30"]', timeout=30_000)
        idle(page)
        adv_pred = page.inner_text("#pred-adv")
        after = bars(page, "adv")

        assert page.inner_text("#eps-out") == "0.30"
        assert adv_pred.split()[0] != clean_pred.split()[0], (clean_pred, adv_pred)
        assert "flipped" in page.inner_text("#verdict")
        assert len(after) == 5 and after != before  # the "after" bars were redrawn with new probabilities
        assert bars(page, "clean")[0][0] == clean_pred.split()[0]
        assert page.inner_text("#n-linf") == "0.300"
        assert page.get_attribute("#img-adv", "src").startswith("data:image/png")
        assert page.get_attribute("#cam-adv", "src").startswith("data:image/png")
        assert page.locator("#error").is_hidden()

        assert not errors, errors
    finally:
        page.close()


def save_screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    """``ARTIFACTS/NAME``; the README's copy in ``docs/`` is written when missing or when asked
    (BASTION_UPDATE_SCREENSHOT=1), so that an ordinary test run does not leave a changed binary file in the
    working tree."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), full_page=full_page)
    assert shot.stat().st_size > 10_000
    readme_copy = README_SHOT.parent / name
    if not readme_copy.exists() or os.environ.get("BASTION_UPDATE_SCREENSHOT") == "1":
        readme_copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, readme_copy)


def idle(page: Any) -> None:
    page.wait_for_function("() => !document.getElementById('results').classList.contains('busy')", timeout=30_000)


def broken_images(page: Any) -> list[str]:
    """The page's <img> elements that show nothing but should (visible, or given a source, yet not decoded)."""
    return page.evaluate("""() => [...document.images]
        .filter((im) => im.getAttribute('src')
                       || (im.offsetParent !== null && getComputedStyle(im).visibility !== 'hidden'))
        .filter((im) => !(im.complete && im.naturalWidth > 0))
        .map((im) => im.id || im.alt)""")


def test_the_page_opens_on_an_attacked_image_with_no_broken_image(browser: Any, server_url: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server_url + "/")
        assert broken_images(page) == []  # before anything arrived: no broken-image icon either
        page.wait_for_selector('#results[data-gallery="0"][data-attack="fgsm"]', timeout=30_000)
        idle(page)
        assert page.get_attribute('.thumb[data-id="0"]', "class").split().count("selected") == 1
        assert page.inner_text("#pred-clean") != "–"
        assert broken_images(page) == []
        assert page.evaluate("[...document.images].filter((im) => im.offsetParent !== null).length") >= 30 + 5
        href = page.get_attribute("#download", "href")
        assert page.locator("#download").is_visible() and href.startswith("data:image/png;base64,")
        assert page.get_attribute("#download", "download").endswith(".png")
        assert not errors, errors
    finally:
        page.close()


def test_jsma_slider_reads_gamma_and_the_seed_is_checked_by_the_server(browser: Any, server_url: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(server_url + "/")
        page.wait_for_selector('#results[data-gallery="0"]', timeout=30_000)
        assert page.inner_text("#eps-sym") == "\u03b5"
        page.select_option("#attack", "jsma")
        page.wait_for_selector('#results[data-attack="jsma"]', timeout=30_000)
        idle(page)
        assert page.inner_text("#eps-sym") == "\u03b3"
        status = page.inner_text("#status")
        assert "\u03b3 = 0.10" in status and "eps" not in status, status

        page.fill("#seed", "-3")
        page.dispatch_event("#seed", "change")
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert "seed must be an integer" in page.inner_text("#error")
        page.fill("#seed", "5")
        page.dispatch_event("#seed", "change")
        page.wait_for_selector('#results[data-seed="5"]', timeout=30_000)
        idle(page)
        assert page.locator("#error").is_hidden()
    finally:
        page.close()


def test_the_adaptive_attack_breaks_bart_in_the_page(browser: Any, server_url: str) -> None:
    """Gallery image 1 holds against plain PGD at eps 0.2 on the BaRT model; PGD + EOT + BPDA flips it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server_url + "/")
        page.wait_for_selector('#results[data-gallery="0"]', timeout=30_000)
        assert page.locator('#attack option[value="pgd-adaptive"]').is_disabled()  # not for the standard model
        page.check('input[name=model][value="bart"]')
        assert page.locator('#attack option[value="pgd-adaptive"]').is_enabled()
        page.click('.thumb[data-id="1"]')
        page.select_option("#attack", "pgd")
        page.locator("#eps").fill("0.2")
        page.wait_for_selector('#results[data-model="bart"][data-attack="pgd"][data-gallery="1"][data-eps="0.20"]',
                               timeout=60_000)
        idle(page)
        assert page.get_attribute("#results", "data-flipped") == "false"
        assert "held" in page.inner_text("#verdict")

        page.select_option("#attack", "pgd-adaptive")
        page.wait_for_selector('#results[data-attack="pgd-adaptive"][data-eps="0.20"]', timeout=60_000)
        idle(page)
        assert page.get_attribute("#results", "data-flipped") == "true"
        assert "flipped" in page.inner_text("#verdict")
        assert "80 queries" in page.inner_text("#status") and "8 draws" in page.inner_text("#status")
        assert broken_images(page) == [] and page.locator("#error").is_hidden()

        page.click("#curve-btn")  # the batch view: naive FGSM against FGSM through EOT + BPDA
        page.wait_for_selector('#curve[data-model="bart"][data-lines="2"] svg polyline', timeout=120_000)
        assert page.locator("#curve svg polyline").count() == 2
        assert "30 images" in page.inner_text("#curve-info")
        save_screenshot(page, "web_demo.png")
        assert not errors, errors
    finally:
        page.close()


def test_phone_layout_puts_the_verdict_right_under_the_slider(browser: Any, server_url: str) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    try:
        page.goto(server_url + "/")
        page.wait_for_selector('#results[data-gallery="0"]', timeout=30_000)
        idle(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no horizontal scroll
        slider = page.locator("#eps").bounding_box()
        verdict = page.locator("#verdict").bounding_box()
        adv = page.locator("#img-adv").bounding_box()
        gap = verdict["y"] - (slider["y"] + slider["height"])
        assert 0 < gap < 160, gap  # the verdict follows the slider within a few lines
        assert adv["y"] + adv["height"] - slider["y"] < 844 * 0.75  # slider, verdict and images on one screen
        assert adv["x"] + adv["width"] <= 390
        # the main point on a phone: the BaRT model broken by the adaptive attack, seen right under the slider
        page.check('input[name=model][value="bart"]')
        page.click('.thumb[data-id="1"]')
        page.select_option("#attack", "pgd-adaptive")
        page.locator("#eps").fill("0.2")
        page.wait_for_selector('#results[data-attack="pgd-adaptive"][data-gallery="1"][data-eps="0.20"]', timeout=60_000)
        idle(page)
        assert page.get_attribute("#results", "data-flipped") == "true"
        page.evaluate("document.querySelector('.attack-panel').scrollIntoView()")
        save_screenshot(page, "web_demo_phone.png", full_page=False)
    finally:
        page.close()


def test_bad_upload_shows_the_servers_message(browser: Any, server_url: str, tmp_path: Path) -> None:
    page = browser.new_page()
    try:
        page.goto(server_url + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.click('.tab[data-tab="upload"]')
        bad = tmp_path / "not-an-image.png"
        bad.write_bytes(b"GIF89a" + b"\x00" * 64)
        page.set_input_files("#file-input", str(bad))
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert "only PNG and JPEG" in page.inner_text("#error")

        good = tmp_path / "digit.png"
        good.write_bytes(encode(digit_array(light_background=True), "PNG"))
        page.set_input_files("#file-input", str(good))
        page.wait_for_selector('#results[data-attack="fgsm"][data-gallery=""]', timeout=30_000)  # the upload's result
        assert page.locator("#error").is_hidden()
        assert page.locator("#upload-preview").is_visible()
    finally:
        page.close()


def test_drawing_on_the_canvas_runs_an_attack(browser: Any, server_url: str) -> None:
    page = browser.new_page()
    try:
        page.goto(server_url + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.click('.tab[data-tab="draw"]')
        box = page.locator("#draw").bounding_box()
        x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
        page.mouse.move(x0, y0)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(x0, y0 + box["height"] * 0.06 * i)
        page.mouse.up()
        page.wait_for_selector('#results[data-attack="fgsm"][data-gallery=""]', timeout=30_000)  # the drawing's result
        assert page.locator("#draw-preview").is_visible()
        assert page.inner_text("#pred-clean") != "–"
    finally:
        page.close()


def test_a_required_target_moves_off_the_selected_digits_own_class(browser: Any, server_url: str) -> None:
    """Targeted FGSM starts at target 0; on a gallery "0" that target is the image's own class, which the server
    refuses. The page now moves the target to the next class instead of showing that error."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(server_url + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        zero = page.locator('.thumb[title$="label 0"]').first
        page.select_option("#attack", "fgsm-targeted")
        zero.click()
        page.wait_for_selector('#results[data-attack="fgsm-targeted"]', timeout=30_000)
        idle(page)
        assert page.input_value("#target") == "1"
        assert page.locator("#error").is_hidden()
    finally:
        page.close()


def test_a_page_of_another_site_cannot_make_the_browser_use_the_demo(browser: Any) -> None:
    """A page served from another port of 127.0.0.1 (another origin, the same site) sends the demo the simple
    requests a browser makes without asking (a text/plain attack, a multipart upload): both are refused (403)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    answered: list[tuple[str, int]] = []
    ctx = DemoContext()
    demo = create_app(ctx)

    async def recording(scope: Any, receive: Any, send: Any) -> None:  # the status of every POST the demo answers
        async def send_recorded(message: Any) -> None:
            if message["type"] == "http.response.start" and scope["method"] == "POST":
                answered.append((scope["path"], message["status"]))
            await send(message)

        await demo(scope, receive, send_recorded)

    try:
        with live_server(recording) as target:
            script = f"""
              const body = JSON.stringify({{model: "standard", attack: "pgd", eps: 0.3, image: {{gallery: 4}}}});
              const form = new FormData();
              form.append("file", new Blob([new Uint8Array([137, 80, 78, 71])], {{type: "image/png"}}), "x.png");
              Promise.allSettled([
                fetch("{target}/api/attack", {{method: "POST", mode: "no-cors", body,
                                               headers: {{"Content-Type": "text/plain"}}}}),
                fetch("{target}/api/upload", {{method: "POST", mode: "no-cors", body: form}}),
              ]).then(() => {{ document.title = "sent"; }});
            """

            async def evil_page(_request: Request) -> HTMLResponse:
                return HTMLResponse(f"<!doctype html><title>evil</title><script>{script}</script>")

            with live_server(Starlette(routes=[Route("/", evil_page)])) as evil:
                page = browser.new_page()
                try:
                    page.goto(evil + "/")
                    page.wait_for_function("document.title === 'sent'", timeout=30_000)
                finally:
                    page.close()
    finally:
        ctx.close()
    assert sorted(answered) == [("/api/attack", 403), ("/api/upload", 403)], answered
