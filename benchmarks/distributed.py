"""Speed-up of 2 processes over 1 for evaluation on this machine (torchrun, gloo, CPU).

    python benchmarks/distributed.py [--n 500]

Runs the same ``bastion evaluate`` command with ``torchrun --nproc_per_node 1`` and ``2`` (each process with
1 thread, so the two processes use the two cores), alternating, 2 repeats each; checks the results are equal
and records wall times. On several GPUs or nodes the same command runs as, e.g.::

    torchrun --nproc_per_node 8 -m bastion evaluate --device cuda ...              # one node, 8 GPUs (nccl)
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m bastion evaluate ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write


def run(nproc: int, n: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(29500 + nproc),
           "-m", "bastion", "evaluate", "--model", "mnist-cnn", "--attacks", "fgsm,pgd", "--eps", "0.1,0.2,0.3",
           "--images", str(n), "--out", str(out), "--quiet", "--no-cascade"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for p in (1, 2):
            times[p].append(run(p, args.n, tmp / f"p{p}"))
    a = json.loads((tmp / "p1" / "results.json").read_text())
    b = json.loads((tmp / "p2" / "results.json").read_text())
    same = [r1["accuracy"] for r1 in a["rows"]] == [r2["accuracy"] for r2 in b["rows"]] and \
        a["per_image"]["rows"] .keys() == b["per_image"]["rows"].keys() and \
        all(a["per_image"]["rows"][k]["robust"] == b["per_image"]["rows"][k]["robust"] for k in a["per_image"]["rows"])
    med = {p: statistics.median(v) for p, v in times.items()}
    res = {"n": args.n, "seconds": times, "median_seconds": med, "speedup_2_over_1": med[1] / med[2],
           "identical_per_image_results": same,
           "note": "wall time of the whole torchrun command, including process start-up and model loading"}
    print(write("distributed.json", res))
    print(res)


if __name__ == "__main__":
    main()
