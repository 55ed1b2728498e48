"""JSMA peak memory: each case in a fresh subprocess, peak RSS (VmHWM) recorded.

    python benchmarks/jsma_memory.py [--quick] [--full-224]

Writes ``benchmarks/results/jsma_memory.json`` (``jsma_memory_quick.json`` with --quick).

Cases (random inputs in [0, 1], target = (clean prediction + 1) mod 10, so every sample has work to do):

* ``cifar-batch100``: 100 inputs of 3x32x32 on ``create_model("cifar-resnet")`` (randomly initialised,
  eval mode), theta=1, gamma=0.145: the full budget (445 features, 222 pair steps).
* ``224-single``: one 3x224x224 input (150,528 features) on the same architecture (global average pooling,
  so it takes any size). By default the budget is capped at 400 features (200 pair steps, gamma=400/150528)
  to keep the run short; the attack's state does not grow with the steps taken, so the peak is reached in
  the first step. ``--full-224`` runs the paper's gamma=0.145 (21,826 features, up to 10,913 steps).
* ``baseline-*``: the same process (imports, model, inputs, one forward and backward pass) without the
  attack, so the attack's own share can be read off.

Each child reports its own ``VmHWM`` from /proc/self/status; the parent also records
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after each case (a running maximum over the children so far).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(case: str, gamma_224: float, threads: int) -> None:
    import torch

    from bastion.attacks.jsma import JSMA
    from bastion.models import create_model

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    model = create_model("cifar-resnet").eval()
    if case.endswith("cifar-batch100"):
        x = torch.rand(100, 3, 32, 32, generator=g)
        gamma = 0.145
    else:
        x = torch.rand(1, 3, 224, 224, generator=g)
        gamma = gamma_224
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % 10
    out: dict = {"case": case, "input_shape": list(x.shape), "features_per_input": x[0].numel(), "threads": threads}
    if case.startswith("baseline"):
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).sum(), xg)
    else:
        atk = JSMA(theta=1.0, gamma=gamma, output="logits")  # the chunked pair search (the softmax one needs none)
        t0 = time.perf_counter()
        res = atk(model, x, y, target=target)
        out.update({
            "gamma": gamma,
            "budget_features": atk.threat.budget(x[0].numel()),
            "seconds": time.perf_counter() - t0,
            "pair_steps_mean": float(res.queries.float().mean()),
            "success_rate": float(res.success.float().mean()),
            "mean_l0": float(res.norms["l0"].mean()),
            "max_l0": float(res.norms["l0"].max()),
        })
    out["vm_hwm_mib"] = vm_hwm_mib()
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="cap the 224 case at 20 features (10 steps)")
    ap.add_argument("--full-224", action="store_true", help="the 224 case at the paper's gamma=0.145")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--gamma-224", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.gamma_224, args.threads)
        return
    n224 = 3 * 224 * 224
    gamma_224 = 0.145 if args.full_224 else (20 if args.quick else 400) / n224
    cases = ["baseline-cifar-batch100", "cifar-batch100", "baseline-224-single", "224-single"]
    out: dict = {"benchmark": "jsma_memory", "quick": args.quick, "limits_gib": {"cifar-batch100": 2, "224-single": 4},
                 "cases": {}}
    for case in cases:
        cmd = [sys.executable, __file__, "--child", case, "--gamma-224", repr(gamma_224), "--threads", str(args.threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            out["cases"][case] = {"error": proc.stderr[-2000:]}
            print(f"{case}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            continue
        rec = json.loads(line[len("RESULT "):])
        rec["wall_seconds"] = time.perf_counter() - t0
        rec["parent_ru_maxrss_children_mib_so_far"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rec["vm_hwm_gib"] = rec["vm_hwm_mib"] / 1024
        out["cases"][case] = rec
        print(f"{case}: peak RSS {rec['vm_hwm_mib']:.0f} MiB "
              + (f"({rec['seconds']:.1f} s, {rec['pair_steps_mean']:.0f} Jacobians/sample, success {rec['success_rate']:.2f}, "
                 f"L0 max {rec['max_l0']:.0f} of budget {rec['budget_features']})" if "seconds" in rec else ""),
              flush=True)
    for case in ("cifar-batch100", "224-single"):
        rec, base = out["cases"].get(case, {}), out["cases"].get(f"baseline-{case}", {})
        if "vm_hwm_mib" in rec and "vm_hwm_mib" in base:
            rec["attack_share_mib"] = rec["vm_hwm_mib"] - base["vm_hwm_mib"]
            rec["under_limit"] = rec["vm_hwm_gib"] < out["limits_gib"][case]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "jsma_memory_quick.json" if args.quick else ("jsma_memory_full224.json" if args.full_224 else "jsma_memory.json")
    out["environment"] = {"cpu_count": os.cpu_count(), "load_average_at_end": list(os.getloadavg())}
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
