"""Cross-site requests: a POST must come from the demo's own page (same-origin ``Origin`` or ``Sec-Fetch-Site``);
a page of another site gets 403 before any work is done. A request with neither header (curl, scripts) is allowed:
see :func:`bastion.web.server.cross_site_reason` for why."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient

from bastion.web.context import DemoContext
from bastion.web.server import create_app, cross_site_reason

from .conftest import digit_array, encode

ATTACK = {"model": "standard", "attack": "fgsm", "eps": 0.3, "image": {"gallery": 4}}


@pytest.fixture(scope="module")
def client(ctx: DemoContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "http://127.0.0.1:9999"},  # another program's page on this machine
    {"origin": "https://127.0.0.1:8000"},  # another scheme
    {"origin": "null"},  # a sandboxed frame or a file: page
    {"origin": "http://evil.example", "sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
    {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "cross-site"},  # the browser's word wins
    {"origin": "garbage"},
])
def test_a_post_from_another_site_is_refused(client: TestClient, ctx: DemoContext, headers: dict[str, str]) -> None:
    admitted = ctx.limiter.admitted
    r = client.post("/api/attack", json=ATTACK, headers=headers)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"].startswith("cross-site request refused")
    assert ctx.limiter.admitted == admitted  # no work was queued
    up = client.post("/api/upload", content=encode(digit_array(), "PNG"),
                     headers={"content-type": "image/png", **headers})
    assert up.status_code == 403


@pytest.mark.parametrize("headers", [
    {"origin": "http://127.0.0.1:8000"},
    {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"},  # what Chromium sends from the page
    {"sec-fetch-site": "same-origin"},
    {"origin": "null", "sec-fetch-site": "same-origin"},  # a same-origin POST under Referrer-Policy: no-referrer
    {"sec-fetch-site": "none"},  # typed or bookmarked by the user
    {},  # curl or a script: no browser involved (see cross_site_reason)
])
def test_a_post_from_the_demos_own_page_or_a_local_tool_is_served(client: TestClient,
                                                                     headers: dict[str, str]) -> None:
    r = client.post("/api/attack", json=ATTACK, headers=headers)
    assert r.status_code == 200, r.text
    assert "flipped" in r.json()


def test_origin_must_match_the_host_it_was_sent_to_port_included() -> None:
    def reason(origin: str, host: str, **extra: str) -> str | None:
        return cross_site_reason(Headers({"origin": origin, "host": host, **extra}))

    assert reason("http://localhost:8000", "localhost:8000") is None
    assert reason("http://LOCALHOST:8000", "localhost:8000") is None  # host names are case-insensitive
    assert reason("http://[::1]:8000", "[::1]:8000") is None
    assert reason("http://localhost", "localhost:80") is None  # the default port, spelled or not
    assert reason("http://localhost:8000", "127.0.0.1:8000") is not None  # another origin, same machine
    assert reason("http://127.0.0.1:8001", "127.0.0.1:8000") is not None
    assert reason("http://127.0.0.1:8000", "127.0.0.1:8000", **{"sec-fetch-site": "same-site"}) is not None
    assert reason("http://127.0.0.1:99999", "127.0.0.1:8000") is not None  # unparsable port
    assert "evil.example" in (reason("http://evil.example", "127.0.0.1:8000") or "")


def test_gets_are_not_checked(client: TestClient) -> None:
    # reading the page and the listings changes nothing (and a cross-origin page cannot read the answers)
    r: Any = client.get("/api/models", headers={"origin": "http://evil.example", "sec-fetch-site": "cross-site"})
    assert r.status_code == 200
