"""Wall time of the main job, ``bastion demo``, on an idle machine and beside one other CPU-bound process.

    python benchmarks/demo_time.py [--repeats 3] [--busy-repeats 1]

Runs the README's demo command in a fresh process (imports and model loading included), ``--repeats`` times on
the machine as it is (run it on an otherwise idle machine), then ``--busy-repeats`` times while this script keeps
one other process busy (a NumPy matrix-product loop on one thread, as a laptop's other work or a shared CI box
would). Records the wall times, the per-section times the demo reports, the threads it chose and the load
average. Bars (issue #25): median idle <= 180 s; busy <= 2.5x the idle median. Writes
benchmarks/results/demo_time.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write


def _burn(stop: mp.Event) -> None:  # type: ignore[valid-type]
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    a = np.random.default_rng(0).random((400, 400))
    while not stop.is_set():  # type: ignore[attr-defined]
        a = (a @ a) / 400.0


def run_demo() -> dict:
    out = Path(tempfile.mkdtemp()) / "report"
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bastion", "demo", "--out", str(out), "--quiet"], check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = json.loads((out / "results.json").read_text())
    return {"wall_seconds": wall, "demo_seconds": res["seconds"], "threads": res.get("threads"),
            "sections": res["seconds_per_section"], "load_average_before": load, "stderr": proc.stderr[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy-repeats", type=int, default=1)
    args = ap.parse_args()
    idle = []
    for _ in range(args.repeats):
        idle.append(run_demo())
        print("idle", idle[-1]["wall_seconds"], flush=True)
    busy = []
    if args.busy_repeats:
        stop = mp.Event()
        burner = mp.Process(target=_burn, args=(stop,), daemon=True)
        burner.start()
        time.sleep(5)  # let the load show
        try:
            for _ in range(args.busy_repeats):
                busy.append(run_demo())
                print("busy", busy[-1]["wall_seconds"], flush=True)
        finally:
            stop.set()
            burner.join(10)
    idle_median = statistics.median(r["wall_seconds"] for r in idle) if idle else None
    busy_median = statistics.median(r["wall_seconds"] for r in busy) if busy else None
    print(write("demo_time.json", {
        "bar_idle_seconds": 180, "bar_busy_over_idle": 2.5,
        "idle_median_seconds": idle_median, "busy_median_seconds": busy_median,
        "busy_over_idle": busy_median / idle_median if idle_median and busy_median else None,
        "idle_runs": idle, "busy_runs": busy}))


if __name__ == "__main__":
    main()
