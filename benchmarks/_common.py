"""Shared helpers for the benchmark scripts (not part of the library)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("BASTION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def environment() -> dict[str, Any]:
    import bastion

    return {
        "bastion": bastion.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def heldout(n: int):
    """``n`` evenly spaced images of mnist-5k (held out for every shipped model)."""
    from bastion.data import load_dataset

    full = load_dataset("mnist-5k", "all")
    idx = torch.linspace(0, len(full) - 1, n).round().long()
    return full.subset(idx)


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2, default=float))
    return path


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
