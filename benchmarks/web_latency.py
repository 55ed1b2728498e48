"""Latency of the web demo's attack requests, server side.

Measures ``bastion.web.handlers.run_attack`` (validation, the attack, two Grad-CAMs, the PNG data URLs: all a
request costs besides HTTP) and, for FGSM, the whole HTTP round trip through the ASGI app (Starlette's test
client, no sockets). Each case runs interleaved over several gallery images and repeats; medians and p90s
are reported, with torch limited to 1 intra-op thread (as ``bastion serve`` runs it) and with torch's
default thread count, measured in the same run.

    python benchmarks/web_latency.py [--quick]

Writes ``benchmarks/results/web_latency.json``. The bar: FGSM on MNIST answers in under 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from _common import write

from bastion.web import handlers
from bastion.web.context import DemoContext

CASES: list[dict[str, Any]] = [
    {"attack": "fgsm", "eps": 0.3},
    {"attack": "fgsm-targeted", "eps": 0.3, "target": 3},
    {"attack": "bim", "eps": 0.3, "steps": 10},
    {"attack": "pgd", "eps": 0.3, "steps": 20},
    {"attack": "pgd", "eps": 0.3, "steps": 100},
    {"attack": "jsma", "eps": 0.1},
]


def name_of(case: dict[str, Any]) -> str:
    return case["attack"] + (f"-{case['steps']}steps" if "steps" in case else "")


def summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"median_ms": round(statistics.median(s), 1), "p90_ms": round(s[min(len(s) - 1, int(0.9 * len(s)))], 1),
            "min_ms": round(s[0], 1), "max_ms": round(s[-1], 1), "n": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    images = [0, 4, 9, 15, 21, 27]
    default_threads = torch.get_num_threads()
    ctx = DemoContext()
    handlers.warm_up(ctx)
    models = [m["key"] for m in handlers.list_models(ctx)["models"] if m["available"]]

    thread_settings = sorted({1, default_threads})
    handler_ms: dict[str, dict[str, list[float]]] = {}
    for _ in range(reps):  # interleave thread settings and cases so load changes hit all alike
        for threads in thread_settings:
            torch.set_num_threads(threads)
            for model in models:
                for case in CASES:
                    if model != "standard" and case["attack"] not in ("fgsm",):
                        continue
                    key = f"{model}/{name_of(case)}"
                    for img in images:
                        t0 = time.perf_counter()
                        handlers.run_attack({"model": model, "image": {"gallery": img}, **case}, ctx)
                        handler_ms.setdefault(f"threads={threads}", {}).setdefault(key, []).append(
                            (time.perf_counter() - t0) * 1000)

    # the whole HTTP round trip for FGSM (ASGI app in process, no sockets)
    from starlette.testclient import TestClient

    from bastion.web.server import create_app

    http_ms: dict[str, list[float]] = {}
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        for _ in range(reps):
            for threads in thread_settings:
                torch.set_num_threads(threads)
                for img in images:
                    t0 = time.perf_counter()
                    r = client.post("/api/attack", json={"model": "standard", "attack": "fgsm", "eps": 0.3,
                                                         "image": {"gallery": img}})
                    http_ms.setdefault(f"threads={threads}", []).append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, r.text
    torch.set_num_threads(default_threads)
    ctx.close()

    result = {
        "what": "server-side latency of one attack request on one 28x28 image (handler; and FGSM over HTTP)",
        "reps": reps, "images": images, "default_torch_threads": default_threads,
        "handler": {t: {k: summary(v) for k, v in cases.items()} for t, cases in handler_ms.items()},
        "http_fgsm": {t: summary(v) for t, v in http_ms.items()},
        "bar_ms": 300,
    }
    path = write("web_latency.json", result)
    for t, cases in result["handler"].items():
        for k, s in cases.items():
            print(f"handler {t:10s} {k:28s} median {s['median_ms']:7.1f} ms  p90 {s['p90_ms']:7.1f} ms  (n={s['n']})")
    for t, s in result["http_fgsm"].items():
        print(f"http    {t:10s} {'standard/fgsm':28s} median {s['median_ms']:7.1f} ms  p90 {s['p90_ms']:7.1f} ms  (n={s['n']})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
