"""Wall time of the main job, ``bastion demo`` (bar: under 3 minutes on 2 cores).

    python benchmarks/demo_time.py [--repeats 1]

Runs the README's demo command in a fresh process (model loading and imports included) and records the wall
time and the per-section times the demo itself reports. Writes benchmarks/results/demo_time.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeats):
        out = Path(tempfile.mkdtemp()) / "report"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bastion", "demo", "--out", str(out), "--quiet"], check=True)
        wall = time.perf_counter() - t0
        res = json.loads((out / "results.json").read_text())
        runs.append({"wall_seconds": wall, "demo_seconds": res["seconds"], "sections": res["seconds_per_section"],
                     "report_bytes": (out / "report.html").stat().st_size})
        print(runs[-1], flush=True)
    print(write("demo_time.json", {"bar_seconds": 180, "runs": runs}))


if __name__ == "__main__":
    main()
