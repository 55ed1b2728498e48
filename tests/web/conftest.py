from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from bastion.web.context import DemoContext


@pytest.fixture(scope="session")
def ctx() -> Iterator[DemoContext]:
    """One demo context (the shipped models, the mnist-5k gallery) for the whole web test session."""
    c = DemoContext()
    yield c
    c.close()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run torch with one intra-op thread, as ``bastion serve`` does (restored afterwards): one 28x28 image
    gains nothing from more, and on a loaded 2-core machine more threads make every call several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def digit_array(*, light_background: bool = False, size: int = 120, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A crude "1"-like stroke plus a bar, uint8 (size, size)."""
    a = np.zeros((size, size), dtype=np.uint8)
    cy, cx = size // 2 + offset[0], size // 2 + offset[1]
    a[cy - size // 3 : cy + size // 3, cx - size // 20 : cx + size // 20] = 255
    a[cy - size // 3 : cy - size // 3 + size // 20, cx - size // 8 : cx] = 255
    return 255 - a if light_background else a


def encode(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb as far as the header goes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def real_bomb_png(side: int = 5000) -> bytes:
    """A genuine ``side x side`` one-bit PNG: a few kilobytes on disk, ``side**2`` pixels decoded."""
    buf = io.BytesIO()
    Image.new("1", (side, side), 0).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buf, format="GIF")
    return buf.getvalue()


@contextmanager
def live_server(app: object) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
