"""Every endpoint through the ASGI app (Starlette's TestClient: no sockets), including bad inputs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from bastion.web.context import DemoContext
from bastion.web.server import STATIC, create_app

from .conftest import digit_array, encode, gif_bytes, png_header_only, real_bomb_png


@pytest.fixture(scope="module")
def client(ctx: DemoContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as c:
        yield c


def good(**kw: Any) -> dict[str, Any]:
    return {"model": "standard", "attack": "fgsm", "eps": 0.3, "image": {"gallery": 4}, **kw}


def assert_error(resp: Any, status: int, match: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and re.search(match, body["error"]), body


# ------------------------------------------------------------------------ page and static files


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in r.text and 'href="/static/style.css"' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for name, ctype in [("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and ctype in s.headers["content-type"]


def test_page_loads_nothing_from_elsewhere() -> None:
    """Works offline: no CDN, no external font, script or style anywhere in the page's files."""
    for path in STATIC.iterdir():
        text = path.read_text()
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text) + re.findall(r"url\(([^)]+)\)", text)
        refs += re.findall(r"""(?:fetch|import)\(\s*["']([^"']+)""", text)
        for ref in refs:
            assert ref.startswith(("/", "data:")), f"{path.name} references {ref}"
        assert "//cdn" not in text and "googleapis" not in text


def test_unknown_path_and_wrong_method_are_json(client: TestClient) -> None:
    assert_error(client.get("/api/nothing"), 404, "Not Found")
    assert_error(client.get("/api/attack"), 405, "Method Not Allowed")
    assert client.get("/static/../server.py").status_code == 404


def test_foreign_host_header_is_refused(ctx: DemoContext) -> None:
    # DNS rebinding: a page on another origin resolving its name to 127.0.0.1 must not reach the API
    with TestClient(create_app(ctx), base_url="http://evil.example") as c:
        assert c.get("/api/models").status_code == 400


# ------------------------------------------------------------------------ listings


def test_models(client: TestClient) -> None:
    r = client.get("/api/models")
    assert r.status_code == 200
    models = {m["key"]: m for m in r.json()["models"]}
    assert models["standard"]["available"] is True
    assert set(models) == {"standard", "adversarial", "bart", "label-only"}


def test_attacks(client: TestClient) -> None:
    r = client.get("/api/attacks")
    assert r.status_code == 200
    body = r.json()
    assert [a["key"] for a in body["attacks"]] == ["fgsm", "fgsm-targeted", "bim", "pgd", "jsma", "pgd-adaptive", "pgd-transfer"]
    assert body["limits"]["max_upload_bytes"] == 5 * 1024 * 1024


def test_gallery(client: TestClient) -> None:
    r = client.get("/api/gallery")
    assert r.status_code == 200
    images = r.json()["images"]
    assert len(images) == 30 and all(i["image"].startswith("data:image/png;base64,") for i in images)


# ------------------------------------------------------------------------ uploads


def test_upload_raw_png_and_multipart_jpeg(client: TestClient) -> None:
    r = client.post("/api/upload", content=encode(digit_array(), "PNG"), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert len(r.json()["pixels"]) == 784
    jpg = encode(np.stack([digit_array(light_background=True)] * 3, -1), "JPEG")
    r = client.post("/api/upload", files={"file": ("d.jpg", jpg, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["inverted"] is True


def test_upload_then_attack_the_pixels(client: TestClient) -> None:
    up = client.post("/api/upload", content=encode(digit_array(), "PNG"), headers={"content-type": "image/png"})
    r = client.post("/api/attack", json=good(image={"pixels": up.json()["pixels"]}))
    assert r.status_code == 200 and r.json()["label"] is None


@pytest.mark.parametrize(
    "body, ctype, status, match",
    [
        (gif_bytes(), "image/gif", 415, "only PNG and JPEG"),
        (gif_bytes(), "image/png", 415, "GIF"),
        (b"just some text", "application/octet-stream", 415, "only PNG and JPEG"),
        (encode(digit_array(), "PNG"), "text/plain", 415, "not as 'text/plain'"),
        (encode(digit_array(), "PNG"), "application/json", 415, "not as 'application/json'"),
        (b"", "image/png", 400, "empty"),
        (encode(digit_array(), "PNG")[:60], "image/png", 400, "could not decode"),
        (png_header_only(30000, 30000), "image/png", 413, "decompression-bomb"),
        (png_header_only(5000, 5000), "image/png", 413, "pixels"),
    ],
)
def test_upload_bad_inputs(client: TestClient, body: bytes, ctype: str, status: int, match: str) -> None:
    assert_error(client.post("/api/upload", content=body, headers={"content-type": ctype}), status, match)


def test_upload_real_bomb(client: TestClient) -> None:
    assert_error(client.post("/api/upload", files={"file": ("bomb.png", real_bomb_png(5000), "image/png")}),
                 413, "5000x5000")


def test_upload_too_large_by_content_length(client: TestClient) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024)
    assert_error(client.post("/api/upload", content=big, headers={"content-type": "image/png"}), 413,
                 "limit is 5,242,880 bytes")


def test_upload_too_large_streamed_without_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check up front
        for _ in range(12):
            yield b"\x00" * (1024 * 1024)

    assert_error(client.post("/api/upload", content=chunks(), headers={"content-type": "image/png"}), 413,
                 "larger than the limit")


def test_upload_multipart_problems(client: TestClient) -> None:
    assert_error(client.post("/api/upload", files={"image": ("d.png", encode(digit_array(), "PNG"), "image/png")}),
                 400, 'field named "file"')
    assert_error(client.post("/api/upload", files={"file": ("d.gif", gif_bytes(), "image/gif")}), 415, "PNG")
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024 + 10)
    assert_error(client.post("/api/upload", files={"file": ("big.png", big, "image/png")}), 413, "limit")
    assert_error(client.post("/api/upload", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
                 400, "multipart")


# ------------------------------------------------------------------------ attacks


def test_attack_fgsm_flips(client: TestClient) -> None:
    r = client.post("/api/attack", json=good())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["flipped"] and body["clean"]["pred"] != body["adversarial"]["pred"]
    assert len(body["clean"]["top"]) == 5 and body["norms"]["linf"] == pytest.approx(0.3, abs=1e-3)


@pytest.mark.parametrize(
    "params, status, match",
    [
        (good(eps=1.01), 400, r"eps must be in \[0, 1\]"),
        (good(eps=-1), 400, r"eps must be in \[0, 1\]"),
        (good(attack="pgd", steps=1000), 400, r"steps must be an integer in \[1, 100\]"),
        (good(attack="bim", steps=0), 400, "steps"),
        (good(attack="fgsm-targeted", target=10), 400, r"target must be a class in \[0, 10\)"),
        (good(attack="fgsm-targeted"), 400, "needs a target"),
        (good(model="nope"), 400, "unknown model 'nope'; valid models: standard"),
        (good(attack="cw"), 400, "unknown attack 'cw'"),
        (good(image={"gallery": -1}), 400, "gallery id"),
        (good(image={"pixels": [0.0] * 783}), 400, "784"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_attack_bad_parameters(client: TestClient, params: Any, status: int, match: str) -> None:
    assert_error(client.post("/api/attack", json=params), status, match)


def test_attack_unavailable_model() -> None:
    from torch import nn

    from bastion.errors import WeightsError
    from bastion.web.context import ModelSpec

    def missing(device: str) -> nn.Module:
        raise WeightsError("pretrained model 'mnist-cnn-adv' is not shipped in this version of bastion")

    ctx = DemoContext(models=[ModelSpec(key="standard", label="standard", description="", load=missing)])
    try:
        with TestClient(create_app(ctx), base_url="http://127.0.0.1") as c:
            assert_error(c.post("/api/attack", json=good(model="standard")), 409, "not shipped")
    finally:
        ctx.close()


def test_attack_bad_json_and_big_body(client: TestClient) -> None:
    assert_error(client.post("/api/attack", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "must be a JSON object")
    assert_error(client.post("/api/attack", content=b"\xff\xfe", headers={"content-type": "application/json"}),
                 400, "JSON object")
    huge = json.dumps(good(image={"pixels": [0.123456789] * 20000}))
    assert_error(client.post("/api/attack", content=huge, headers={"content-type": "application/json"}), 413,
                 "limit is 65,536 bytes")


def test_huge_integers_and_deep_nesting_are_400s_not_500s(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    big = '{"model": "standard", "attack": "pgd", "eps": 0.3, "steps": 9' + "9" * 400 + ', "image": {"gallery": 0}}'
    assert_error(client.post("/api/attack", content=big, headers=headers), 400, "401 digits")
    longer = '{"attack": "fgsm", "eps": 0.1, "seed": 1' + "0" * 5000 + "}"  # Python's int() refuses > 4,300 digits
    assert_error(client.post("/api/attack", content=longer, headers=headers), 400, "out of range")
    nested = "[" * 30000 + "]" * 30000
    assert_error(client.post("/api/attack", content=nested, headers=headers), 400, "nested too deeply")
    assert_error(client.post("/api/attack", json={"eps": 0.1, "image": {"gallery": 0}}), 400, "attack is required")


def test_server_keeps_serving_after_errors(client: TestClient) -> None:
    for body in (b"\x00" * 100, gif_bytes(), png_header_only(99999, 99999)):
        assert client.post("/api/upload", content=body, headers={"content-type": "image/png"}).status_code >= 400
    assert client.post("/api/attack", json=good(eps="big")).status_code == 400
    assert client.get("/api/models").status_code == 200
    assert client.post("/api/attack", json=good()).status_code == 200


def test_unexpected_exception_is_a_500_json(ctx: DemoContext, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.web import handlers

    def boom(params: Any, c: DemoContext) -> Any:
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr(handlers, "run_attack", boom)
    with TestClient(create_app(ctx), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.post("/api/attack", json=good())
        assert_error(r, 500, r"internal error \(RuntimeError\)")
        assert "/secret/path" not in r.text
        assert c.get("/api/models").status_code == 200
