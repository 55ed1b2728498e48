"""Bounded concurrency against a real server on 127.0.0.1: extra requests get 503, the server never stops
serving, and a streamed upload is cut off at the limit. All traffic stays on loopback and every loop is bounded."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import torch
from torch import Tensor, nn

from bastion.models import pretrained
from bastion.web.context import DemoContext, Limiter, Limits, ModelSpec
from bastion.web.errors import BusyError
from bastion.web.server import create_app

from .conftest import live_server


class Gated(nn.Module):
    """mnist-cnn whose forward waits for ``gate``: holds a worker busy for as long as the test wants."""

    def __init__(self, model: nn.Module, gate: threading.Event) -> None:
        super().__init__()
        self.model = model
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        self.gate.wait(timeout=30)
        return self.model(x)


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_extra_requests_get_503_and_the_server_keeps_serving() -> None:
    gate = threading.Event()
    spec = ModelSpec(key="slow", label="slow", description="gated mnist-cnn",
                     load=lambda d: Gated(pretrained("mnist-cnn", device=d), gate).eval())
    ctx = DemoContext(models=[spec], limits=Limits(max_running=1, max_waiting=1))
    ctx.model("slow")
    ctx.gallery()
    body = {"model": "slow", "attack": "fgsm", "eps": 0.3, "image": {"gallery": 4}}
    try:
        with live_server(create_app(ctx)) as url, httpx.Client(base_url=url, timeout=60) as client, \
                ThreadPoolExecutor(max_workers=2) as pool:
            first = [pool.submit(client.post, "/api/attack", json=body) for _ in range(2)]
            wait_for(lambda: ctx.limiter.admitted == 2)  # one running (held at the gate), one waiting
            for _ in range(3):
                r = client.post("/api/attack", json=body)
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                assert "busy" in r.json()["error"]
            # the event loop is not blocked by the attacks: light endpoints answer at once
            t0 = time.perf_counter()
            assert client.get("/api/models").status_code == 200
            assert client.get("/").status_code == 200
            assert time.perf_counter() - t0 < 5
            gate.set()
            assert [f.result(timeout=60).status_code for f in first] == [200, 200]
            wait_for(lambda: ctx.limiter.admitted == 0)
            r = client.post("/api/attack", json=body)
            assert r.status_code == 200 and "flipped" in r.json()
    finally:
        gate.set()
        ctx.close()


def test_streamed_upload_is_cut_off_at_the_limit() -> None:
    ctx = DemoContext(limits=Limits(max_upload_bytes=1024 * 1024))
    with live_server(create_app(ctx)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"\x00" * 65536
            sent = 0
            try:
                for _ in range(64):  # up to 4 MiB, far past the 1 MiB limit
                    s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    sent += len(chunk)
                s.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed while we were still sending: what we want
            reply = b""
            try:
                while b"\r\n\r\n" not in reply:
                    part = s.recv(65536)
                    if not part:
                        break
                    reply += part
            except ConnectionResetError:
                pass
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        with httpx.Client(base_url=url) as client:
            assert client.get("/api/attacks").status_code == 200  # still serving


def test_limiter_bounds_and_releases() -> None:
    lim = Limiter(max_running=1, max_waiting=1)
    gate = threading.Event()
    try:
        a = lim.submit(gate.wait, 10)
        b = lim.submit(lambda: 42)
        assert lim.admitted == 2
        with pytest.raises(BusyError, match="busy"):
            lim.submit(lambda: 0)
        gate.set()
        assert a.result(timeout=10) is True and b.result(timeout=10) == 42
        wait_for(lambda: lim.admitted == 0)
        assert lim.submit(torch.zeros, 2).result(timeout=10).shape == (2,)
    finally:
        gate.set()
        lim.close()


def test_limiter_cancelled_waiting_job_frees_its_slot() -> None:
    lim = Limiter(max_running=1, max_waiting=1)
    gate = threading.Event()
    try:
        lim.submit(gate.wait, 10)
        waiting = lim.submit(lambda: 1)
        assert waiting.cancel()  # e.g. its client went away
        wait_for(lambda: lim.admitted == 1)
        lim.submit(lambda: 2)  # room again
    finally:
        gate.set()
        lim.close()
