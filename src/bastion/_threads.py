"""How many threads torch should use: the CPUs this process may run on, minus what other processes keep busy.

torch starts one thread per core and its OpenMP threads spin while they wait. When another CPU-bound process
shares the cores (a laptop, a shared CI box), the spinning threads burn the time the work needs: on a 2-core
machine beside one busy process, ``bastion demo`` took 1,260 s with 2 threads and 448 s with 1. So the front ends
choose the thread count when they start (:func:`choose_threads`) and say which they chose; ``--threads N``
overrides it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: how long the CPU load of other processes is sampled when a command starts
SAMPLE_SECONDS = 0.3


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup (v2 ``cpu.max`` or v1) CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(n, math.ceil(quota))) if quota is not None else max(1, n)


def _cgroup_quota() -> float | None:
    """The CPU quota in CPUs from the cgroup filesystem, None when there is none (or it cannot be read)."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def busy_cpus(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many CPUs other processes keep busy right now: ``/proc/stat`` sampled over ``seconds`` (this process
    is idle meanwhile), else the 1-minute load average; None when neither can be read."""
    try:
        a = _proc_stat()
        time.sleep(seconds)
        b = _proc_stat()
        total, idle = b[0] - a[0], b[1] - a[1]
        if total > 0:
            return (total - idle) / total * (os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _proc_stat() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values[:8]), values[3] + values[4]


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def choose_threads(requested: int | None = None) -> ThreadChoice:
    """The thread count for this run: ``requested`` when given, else the available CPUs minus those other
    processes keep busy (at least 1)."""
    if requested is not None:
        return ThreadChoice(requested, f"{requested} thread(s), as asked (--threads)")
    cpus = available_cpus()
    busy = busy_cpus()
    if busy is None:
        return ThreadChoice(cpus, f"{cpus} thread(s): {cpus} CPU(s) available")
    threads = max(1, min(cpus, math.floor(cpus - busy + 0.5)))
    return ThreadChoice(threads, f"{threads} thread(s): {cpus} CPU(s) available, other processes keep {busy:.1f} "
                                 "busy (--threads N to choose)")
