"""How long a 2-process torchrun evaluation takes to end when one process stalls (SIGSTOP), on this machine.

    python benchmarks/distributed_stall.py [--timeout 10] [--images 400]

Starts ``torchrun --nproc_per_node 2 -m bastion evaluate ... --dist-timeout TIMEOUT`` on 127.0.0.1, waits until
rank 1 has joined the process group (its heartbeat appears in torchrun's rendezvous store), stops rank 1 with
SIGSTOP and measures, from that moment, when rank 0's error line appears and when torchrun exits (and with which
exit code); records everything torchrun printed. Rank 0 first finishes its own shard, then waits for rank 1, so the time to exit includes the rest of
rank 0's shard. Writes ``benchmarks/results/distributed_stall.json``. Linux only (reads ``/proc``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from _common import write

from bastion.distributed import heartbeat_key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_with_rank(parent: int, rank: int) -> list[int]:
    """Processes whose parent is ``parent`` and whose environment has ``RANK=rank`` (torchrun's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if ppid != parent:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration, ValueError):
            continue
        if f"RANK={rank}".encode() in env:
            found.append(int(entry.name))
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=10.0, help="--dist-timeout given to bastion evaluate")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--limit", type=float, default=300.0, help="give up (and kill everything) after this many seconds")
    args = ap.parse_args()

    port = _free_port()
    out = Path(tempfile.mkdtemp()) / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "bastion", "evaluate", "--model", "mnist-cnn", "--attacks", "fgsm,pgd",
           "--steps", "20", "--eps", "0.1,0.3", "--images", str(args.images), "--no-cascade", "--quiet",
           "--dist-timeout", f"{args.timeout:g}", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read(stream) -> None:
        for line in stream:
            lines.append((time.monotonic(), line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in (run.stdout, run.stderr)]
    for r in readers:
        r.start()
    rank1: int | None = None
    try:
        store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=120), wait_for_workers=False)
        while not store.check([heartbeat_key(1)]):  # rank 1 has joined the process group
            if run.poll() is not None or time.monotonic() - started > args.limit:
                raise SystemExit(f"torchrun ended or took too long before rank 1 joined: {lines[-20:]}")
            time.sleep(0.01)
        pids = _children_with_rank(run.pid, 1)
        if len(pids) != 1:
            raise SystemExit(f"expected one rank-1 worker under torchrun {run.pid}, found {pids}")
        rank1 = pids[0]
        os.kill(rank1, signal.SIGSTOP)
        stopped = time.monotonic()
        joined_after = stopped - started
        try:
            code = run.wait(timeout=args.limit)
        except subprocess.TimeoutExpired:
            code = None
        ended = time.monotonic()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        rank1_left = rank1 is not None and Path(f"/proc/{rank1}").exists() and \
            "State:\tZ" not in Path(f"/proc/{rank1}/status").read_text()
        if rank1_left and rank1 is not None:
            os.kill(rank1, signal.SIGKILL)
    for r in readers:
        r.join(timeout=5)
    error = next(((t, line) for t, line in lines if line.startswith("error:")), None)
    res = {
        "command": " ".join(cmd[1:]).replace(str(out), "OUT"),
        "configured_timeout_s": args.timeout,
        "rank1_joined_after_s": round(joined_after, 2),
        "error_line_after_stop_s": None if error is None else round(error[0] - stopped, 2),
        "exit_after_stop_s": None if code is None else round(ended - stopped, 2),
        "exit_code": code,
        "bar_s": args.timeout + 30,
        "within_bar": code is not None and code != 0 and ended - stopped < args.timeout + 30,
        "error_line": None if error is None else error[1],
        "stopped_rank_left_running_after_exit": rank1_left,
        "results_written": (out / "results.json").exists(),
        "bastion_error_lines": sum(line.startswith("error:") for _, line in lines),
        "torchrun_printed_a_traceback": any("Traceback" in line for _, line in lines),
        "output": [line for _, line in lines],
        "note": "times from the SIGSTOP of rank 1; rank 0 finishes its own shard, then waits for rank 1 until its "
                "heartbeat has been silent for the timeout, ends rank 1 (SIGKILL: a stopped process ignores "
                "torchrun's SIGTERM, which would cost 30 s more), prints its error and exits with status 2 (or is ended by "
                "torchrun's SIGTERM once torchrun sees rank 1 gone); torchrun then reports the failure with its "
                "own exit code and summary, which includes a traceback of torchrun itself (printed for any failed "
                "worker)",
    }
    print(write("distributed_stall.json", res))
    print(res)


if __name__ == "__main__":
    main()
