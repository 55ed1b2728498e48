"""Upload flood against ``bastion serve`` on 127.0.0.1: server memory and page latency while 200 clients upload
5 MiB at once.

    python benchmarks/web_flood.py [--clients 200]

Starts ``bastion serve`` on a free port of 127.0.0.1 (loopback only) and waits until it answers. Then two phases,
each with ``--clients`` concurrent uploads of one near-5 MiB PNG (random pixels, so it does not compress) to
``/api/upload``, each on its own connection:

* ``fast``: the bodies are sent as fast as the loopback takes them;
* ``trickled``: each body is sent in 64 KiB pieces, one every 0.1 s (about 8 s per upload).

During each phase a prober (a process of its own) fetches ``GET /`` every 0.02 s on a fresh connection and
records the latency and status. The server's resident memory is sampled every 0.05 s from
``/proc/PID/status`` (VmRSS; psutil when installed), and its peak (VmHWM) is read before and after. Every wait is bounded; the server is stopped at the
end. Writes ``benchmarks/results/web_flood.json``. Bars (issue 23): peak RSS under 600 MB during the flood and
``GET /`` p95 under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
from _common import write
from PIL import Image

HOST = "127.0.0.1"
MB = 1_000_000
LIMIT = 5 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _payload() -> bytes:
    """A PNG of random gray pixels just under the 5 MiB upload limit."""
    rng = np.random.default_rng(0)
    side = 2290
    while True:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
        if len(buf.getvalue()) <= LIMIT:
            return buf.getvalue()
        side -= 10


def _status_kb(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _rss_bytes(pid: int) -> int:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return _status_kb(pid, "VmRSS") * 1024
    return int(psutil.Process(pid).memory_info().rss)


async def _request(port: int, head: bytes, body: bytes, *, piece: int, pause: float,
                   timeout: float) -> tuple[int | None, float]:
    """Send one request (``body`` in ``piece``-byte writes, ``pause`` s apart) and read the status line; the
    server may answer and close before the body is sent."""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except (OSError, TimeoutError):
        return None, time.perf_counter() - t0

    async def send() -> None:
        try:
            writer.write(head)
            for i in range(0, len(body), piece):
                writer.write(body[i : i + piece])
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
        except (ConnectionError, OSError):
            pass  # answered (and closed) early: what a refused upload should see

    sender = asyncio.create_task(send())
    status = None
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if line.startswith(b"HTTP/1.1 "):
            status = int(line.split()[1])
        if status is not None and body == b"":  # a GET: read the whole answer, as a browser would
            length = 0
            while (line := await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await asyncio.wait_for(reader.readexactly(length), timeout)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        pass
    elapsed = time.perf_counter() - t0
    sender.cancel()
    writer.close()
    return status, elapsed


async def _phase(port: int, pid: int, payload: bytes, clients: int, trickle: bool) -> dict[str, Any]:
    head = (f"POST /api/upload HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    piece, pause = (64 * 1024, 0.1) if trickle else (256 * 1024, 0.0)
    rss: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            rss.append(_rss_bytes(pid))
            await asyncio.sleep(0.05)

    # the prober runs in its own process, so that its latencies are not those of this process's busy loop
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    prober = ctx.Process(target=_probe, args=(port, stop, results), daemon=True)
    prober.start()
    started = results.get(timeout=60)
    assert started == "ready"
    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    uploads = await asyncio.gather(*(_request(port, head, payload, piece=piece, pause=pause, timeout=120)
                                     for _ in range(clients)))
    seconds = time.perf_counter() - t0
    await asyncio.sleep(0.5)  # a few more probes after the last answer
    done.set()
    stop.set()
    probes: list[tuple[int | None, float]] = results.get(timeout=60)
    prober.join(10)
    await sampler
    ok = sorted(t for s, t in probes if s == 200)
    return {
        "clients": clients,
        "body_bytes": len(payload),
        "send": f"{piece // 1024} KiB pieces" + (f", one every {pause:g} s" if pause else ", as fast as possible"),
        "seconds": round(seconds, 2),
        "upload_status": {str(k): v for k, v in Counter(s for s, _ in uploads).most_common()},
        "upload_seconds_median": round(statistics.median(t for _, t in uploads), 3),
        "upload_seconds_max": round(max(t for _, t in uploads), 3),
        "peak_rss_mb": round(max(rss) / MB, 1),
        "rss_samples": len(rss),
        "get_probes": len(probes),
        "get_status": {str(k): v for k, v in Counter(s for s, _ in probes).most_common()},
        "get_p50_ms": round(1000 * ok[len(ok) // 2], 1) if ok else None,
        "get_p95_ms": round(1000 * ok[min(len(ok) - 1, int(0.95 * len(ok)))], 1) if ok else None,
        "get_max_ms": round(1000 * ok[-1], 1) if ok else None,
    }


def _probe(port: int, stop: Any, results: Any) -> None:
    """``GET /`` every 0.02 s on a fresh connection until ``stop`` is set (a process of its own); puts
    "ready", then the list of (status, seconds)."""
    get = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    out: list[tuple[int | None, float]] = []
    results.put("ready")
    while not stop.is_set():
        t0 = time.perf_counter()
        status = None
        try:
            with socket.create_connection((HOST, port), timeout=30) as s:
                s.sendall(get)
                reply = b""
                while part := s.recv(65536):  # to the last byte: the server closes after it
                    reply += part
            if reply.startswith(b"HTTP/1.1 "):
                status = int(reply.split()[1])
        except OSError:
            pass
        out.append((status, time.perf_counter() - t0))
        time.sleep(0.02)
    results.put(out)


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    get = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bastion serve exited with {proc.returncode}")
        status, _ = await _request(port, get, b"", piece=1, pause=0.0, timeout=5)
        if status == 200:
            return
        await asyncio.sleep(0.2)
    raise SystemExit("bastion serve did not answer in time")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    args = ap.parse_args()
    payload = _payload()
    port = _free_port()
    cmd = [sys.executable, "-m", "bastion", "serve", "--host", HOST, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        asyncio.run(_wait_ready(port, proc, 180))
        time.sleep(1)
        before = {"rss_mb": round(_rss_bytes(proc.pid) / MB, 1), "peak_rss_mb": round(_status_kb(proc.pid, "VmHWM")
                                                                                      * 1024 / MB, 1)}
        phases = {}
        for name, trickle in (("fast", False), ("trickled", True)):
            phases[name] = asyncio.run(_phase(port, proc.pid, payload, args.clients, trickle))
            time.sleep(2)
            phases[name]["rss_mb_2s_after"] = round(_rss_bytes(proc.pid) / MB, 1)
        after = {"rss_mb": round(_rss_bytes(proc.pid) / MB, 1),
                 "peak_rss_mb_since_start": round(_status_kb(proc.pid, "VmHWM") * 1024 / MB, 1)}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    log = err.decode(errors="replace").splitlines()
    peak = max(p["peak_rss_mb"] for p in phases.values())
    p95 = max(p["get_p95_ms"] or float("inf") for p in phases.values())
    res = {
        "command": "bastion serve --host 127.0.0.1 --port PORT",
        "server_before_flood": before,
        "phases": phases,
        "server_after_flood": after,
        "server_log_lines": len(log),
        "server_log_levels": dict(Counter(line.split(":")[0] for line in log if line[:1].isupper() and ":" in line)),
        "server_log_tracebacks": sum("Traceback" in line for line in log),
        "bar": {"peak_rss_mb": 600, "get_p95_ms": 500},
        "peak_rss_mb": peak,
        "get_p95_ms": p95,
        "passed": peak < 600 and p95 < 500,
        "note": "RSS from /proc (VmRSS sampled every 0.05 s; VmHWM is the peak since the server started, model "
                "loading included); MB = 10^6 bytes; GET / latency to the last byte on a fresh connection",
    }
    print(write("web_flood.json", res))
    print({k: v for k, v in res.items() if k != "phases"})
    for name, p in phases.items():
        print(name, p)


if __name__ == "__main__":
    main()
