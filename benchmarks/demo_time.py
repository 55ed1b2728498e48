"""Wall time of the main job, ``bastion demo``, on an idle machine and beside one other CPU-bound process.

    python benchmarks/demo_time.py [--repeats 3] [--busy-repeats 1]

Runs the README's demo command in a fresh process (imports and model loading included), ``--repeats`` times on
the machine as it is (run it on an otherwise idle machine), then ``--busy-repeats`` times while this script keeps
one other process busy (a NumPy matrix-product loop on one thread, as a laptop's other work or a shared CI box
would). Records the wall times, the per-section times the demo reports, the threads it chose and the load
average, and a floor: a fixed workload of the demo's kind timed the same way, whose busy / idle ratio is what the machine allows
any CPU-bound job. Bars (issue #25): median idle <= 180 s; busy <= 2.5x the idle median. Writes
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


#: the floor: a fixed workload of the demo's kind (PGD-10 on 500 images through mnist-cnn, three times), with the
#: thread count the demo would choose at that moment; its busy / idle ratio is what the machine allows any
#: CPU-bound job, so the demo's own ratio is compared with it
FLOOR = """
import json, time, torch
from bastion._threads import choose_threads
from bastion.attacks import PGD
from bastion.data import load_dataset
from bastion.models import pretrained
choice = choose_threads()
torch.set_num_threads(choice.threads)
m = pretrained("mnist-cnn")
d = load_dataset("mnist-5k", "all").spread(500)
t0 = time.perf_counter()
for _ in range(3):
    PGD(eps=0.3, steps=10, early_stop=False)(m, d.images, d.labels, generator=torch.Generator().manual_seed(0))
print(json.dumps({"seconds": time.perf_counter() - t0, "threads": choice.threads}))
"""


def run_floor() -> dict:
    proc = subprocess.run([sys.executable, "-c", FLOOR], check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy-repeats", type=int, default=1)
    args = ap.parse_args()
    idle = []
    floor_idle = [run_floor()]
    for _ in range(args.repeats):
        idle.append(run_demo())
        print("idle", idle[-1]["wall_seconds"], flush=True)
    floor_idle.append(run_floor())
    print("floor idle", floor_idle, flush=True)
    busy = []
    floor_busy = []
    if args.busy_repeats:
        stop = mp.Event()
        burner = mp.Process(target=_burn, args=(stop,), daemon=True)
        burner.start()
        time.sleep(5)  # let the load show
        try:
            floor_busy.append(run_floor())
            for _ in range(args.busy_repeats):
                busy.append(run_demo())
                print("busy", busy[-1]["wall_seconds"], flush=True)
            floor_busy.append(run_floor())
            print("floor busy", floor_busy, flush=True)
        finally:
            stop.set()
            burner.join(10)
    idle_median = statistics.median(r["wall_seconds"] for r in idle) if idle else None
    busy_median = statistics.median(r["wall_seconds"] for r in busy) if busy else None
    fi = statistics.median(r["seconds"] for r in floor_idle)
    fb = statistics.median(r["seconds"] for r in floor_busy) if floor_busy else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    print(write("demo_time.json", {
        "commit": commit,
        "floor": {"what": "PGD-10 on 500 mnist-5k images through mnist-cnn, 3 times, with the demo's thread choice; "
                          "timed before and after the idle runs and before and after the busy ones",
                  "idle_seconds": [r["seconds"] for r in floor_idle], "busy_seconds": [r["seconds"] for r in floor_busy],
                  "idle_threads": [r["threads"] for r in floor_idle], "busy_threads": [r["threads"] for r in floor_busy],
                  "busy_over_idle": fb / fi if fb else None},
        "bar_idle_seconds": 180, "bar_busy_over_idle": 2.5,
        "idle_median_seconds": idle_median, "busy_median_seconds": busy_median,
        "busy_over_idle": busy_median / idle_median if idle_median and busy_median else None,
        "idle_runs": idle, "busy_runs": busy}))


if __name__ == "__main__":
    main()
