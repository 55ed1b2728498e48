"""Upload floods: bodies are admitted before they are read (503 beyond the limit), read as a stream with the size
limit enforced while reading (413) and a deadline (408); a response sent before the body arrived closes the
connection; a client that goes away is one INFO line. In-process through the ASGI interface where possible, against
a real server on 127.0.0.1 for what uvicorn does with the connection (every loop and wait is bounded)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bastion.errors import ConfigError
from bastion.web.context import DemoContext, Limits
from bastion.web.server import create_app

from .conftest import digit_array, encode, live_server

Receive = Callable[[], Awaitable[dict[str, Any]]]


async def call(app: Any, path: str, receive: Receive, headers: dict[str, str],
               taken: list[int] | None = None) -> dict[str, Any]:
    """One POST through the app's ASGI interface; returns the status, the response headers, the body and (with
    ``taken``, the counter of :func:`chunked_receive`) how many body chunks the app had read when it answered."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8000", **headers}.items()],
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
    got: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            got["status"] = message["status"]
            got["taken_at_answer"] = None if taken is None else taken[0]
            got["headers"] = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            got["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return got


def chunked_receive(chunk: bytes, count: int) -> tuple[Receive, list[int]]:
    """A body of ``count`` chunks; the list counts the chunks the app has taken."""
    taken = [0]

    async def receive() -> dict[str, Any]:
        taken[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": taken[0] < count}

    return receive, taken


@pytest.mark.parametrize("multipart", [False, True])
def test_the_size_limit_is_enforced_while_the_body_streams_in(multipart: bool) -> None:
    limit = 256 * 1024
    ctx = DemoContext(limits=Limits(max_upload_bytes=limit))
    app = create_app(ctx)
    chunk = b"\x00" * 16384
    receive, taken = chunked_receive(chunk, 640)  # 10 MiB on offer, no Content-Length
    if multipart:
        head = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                b"Content-Type: image/png\r\n\r\n")
        first = [True]
        plain = receive

        async def receive() -> dict[str, Any]:  # the multipart head, then the same zeros
            message = await plain()
            if first[0]:
                first[0] = False
                message = {**message, "body": head + message["body"]}
            return message

        headers = {"content-type": "multipart/form-data; boundary=xyz", "transfer-encoding": "chunked"}
    else:
        headers = {"content-type": "image/png", "transfer-encoding": "chunked"}
    try:
        got = asyncio.run(call(app, "/api/upload", receive, headers, taken))
    finally:
        ctx.close()
    assert got["status"] == 413, got
    assert b"larger than the limit" in got["body"]
    # refused as soon as the limit was passed: 16 chunks are the limit, a few more the multipart envelope's slack
    assert got["taken_at_answer"] <= limit // len(chunk) + 2 + (1 if multipart else 0), got["taken_at_answer"]
    assert got["headers"]["connection"] == "close"  # the connection is closed after the answer ...
    # ... once up to 1 MiB more of what the client was still sending has been read and dropped, not all 10 MiB
    assert 0 < taken[0] - got["taken_at_answer"] <= 1024 * 1024 // len(chunk) + 1, taken


def test_requests_beyond_the_admission_limit_get_503_before_their_body_is_read() -> None:
    ctx = DemoContext(limits=Limits(max_requests=2))
    app = create_app(ctx)
    release = asyncio.Event

    async def scenario() -> tuple[dict[str, Any], list[int], list[dict[str, Any]]]:
        gate = release()

        async def stalled() -> dict[str, Any]:  # a body that does not come until the gate opens
            await gate.wait()
            return {"type": "http.disconnect"}

        headers = {"content-type": "image/png", "content-length": "5000000"}
        held = [asyncio.create_task(call(app, "/api/upload", stalled, headers)) for _ in range(2)]
        for _ in range(200):
            if app.state.admission.inside == 2:
                break
            await asyncio.sleep(0.01)
        assert app.state.admission.inside == 2
        receive, taken = chunked_receive(b"\x00" * 65536, 80)
        t0 = time.perf_counter()
        extra = await call(app, "/api/upload", receive, headers, taken)
        extra["seconds"] = time.perf_counter() - t0
        gate.set()
        return extra, taken, list(await asyncio.gather(*held))

    try:
        extra, taken, held = asyncio.run(scenario())
        assert app.state.admission.inside == 0  # the two held slots were given back when their clients went away
        jpg = encode(digit_array(), "PNG")
        receive, _ = chunked_receive(jpg, 1)
        after = asyncio.run(call(app, "/api/upload", receive, {"content-type": "image/png"}))
    finally:
        ctx.close()
    assert extra["status"] == 503 and b"busy" in extra["body"], extra
    assert extra["headers"]["retry-after"] == "1" and extra["headers"]["connection"] == "close"
    assert extra["taken_at_answer"] == 0  # answered before reading one byte of its body
    assert extra["seconds"] < 2
    assert after["status"] == 200, after  # room again


def test_a_client_that_goes_away_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    ctx = DemoContext()
    app = create_app(ctx)
    messages = [{"type": "http.request", "body": b"\x89PNG\r\n\x1a\n" + b"\x00" * 1000, "more_body": True},
                {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    caplog.set_level(logging.INFO)
    try:
        asyncio.run(call(app, "/api/upload", receive, {"content-type": "image/png", "content-length": "50000"}))
    finally:
        ctx.close()
    ours = [r for r in caplog.records if r.name.startswith(("bastion", "uvicorn"))]
    assert [r.levelno for r in ours] == [logging.INFO], [(r.levelname, r.getMessage()) for r in ours]
    assert "went away" in ours[0].getMessage() and "/api/upload" in ours[0].getMessage()
    assert ours[0].exc_info is None
    assert app.state.admission.inside == 0


# ---- against a real server: what happens to the connection ---------------------------------------------------


def _read_reply(s: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What the server sends within ``seconds``, and whether it closed the connection."""
    s.settimeout(0.2)
    reply = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            part = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return reply, True
        if not part:
            return reply, True
        reply += part
    return reply, False


def test_a_trickled_body_gets_408_and_its_connection_is_closed() -> None:
    ctx = DemoContext(limits=Limits(body_seconds=1.0))
    try:
        with live_server(create_app(ctx)) as url, \
                socket.create_connection(url.removeprefix("http://").split(":"), timeout=10) as s:  # type: ignore[arg-type]
            t0 = time.monotonic()
            s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 100000\r\n\r\n\x89PNG")
            closed, reply = False, b""
            for _ in range(25):  # one byte every 0.2 s: the body would take hours
                try:
                    s.sendall(b"\x00")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                part, closed = _read_reply(s, 0.2)
                reply += part
                if closed:
                    break
            took = time.monotonic() - t0
    finally:
        ctx.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    assert b"did not arrive within 1 s" in reply and b"connection: close" in reply.lower()
    assert closed and took < 4.5


def test_an_early_refusal_closes_the_connection_instead_of_draining_the_body() -> None:
    ctx = DemoContext(limits=Limits(max_upload_bytes=1024 * 1024))
    try:
        with live_server(create_app(ctx)) as url, \
                socket.create_connection(url.removeprefix("http://").split(":"), timeout=10) as s:  # type: ignore[arg-type]
            s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 10000000\r\n\r\n")
            reply, closed = _read_reply(s, 3)
            if not closed:  # keep trickling the body, as a flooding client would: the server must not wait
                for _ in range(20):
                    try:
                        s.sendall(b"\x00" * 100)
                    except (BrokenPipeError, ConnectionResetError):
                        closed = True
                        break
                    part, closed = _read_reply(s, 0.2)
                    reply += part
                    if closed:
                        break
    finally:
        ctx.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"connection: close" in reply.lower()
    assert closed


def test_a_client_sending_at_full_speed_reads_the_early_refusal_rather_than_a_reset() -> None:
    """Closing a connection with unread data resets it, and the client loses the answer: the server reads and
    drops the rest of the body (for a bounded time) before it closes."""
    import threading

    ctx = DemoContext(limits=Limits(max_upload_bytes=1024 * 1024))
    body = b"\x89PNG\r\n\x1a\n" + b"\x00" * (6 * 1024 * 1024)
    try:
        with live_server(create_app(ctx)) as url, \
                socket.create_connection(url.removeprefix("http://").split(":"), timeout=10) as s:  # type: ignore[arg-type]
            def send() -> None:
                try:
                    s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(body) + body)
                except OSError:
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            reply, closed = _read_reply(s, 5)
            sender.join(10)
    finally:
        ctx.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"the limit is 1,048,576 bytes" in reply and closed


def test_serve_limits_connections_and_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from bastion.web import handlers, server

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr(handlers, "warm_up", lambda ctx: None)
    server.serve(port=8123, torch_threads=None)
    assert seen["limit_concurrency"] == Limits().max_connections == 256
    assert seen["timeout_keep_alive"] == Limits().keep_alive_seconds == 5
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123


@pytest.mark.parametrize("field, value", [("max_requests", 0), ("body_seconds", 0.0), ("body_seconds", float("nan")),
                                          ("max_connections", -1), ("keep_alive_seconds", 0)])
def test_bad_limits_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Limits(**{field: value})  # type: ignore[arg-type]
