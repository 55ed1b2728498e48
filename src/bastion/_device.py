"""Checking a device name before any work starts (the CLI and the web demo take it as text)."""

from __future__ import annotations

import torch

from bastion._checks import shown
from bastion.errors import ConfigError


def check_device(spec: str | torch.device) -> torch.device:
    """``spec`` as a ``torch.device``, refused with a clear error when torch cannot parse it or this machine
    does not have it (e.g. ``cuda`` on a CPU-only build)."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {shown(spec)}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {shown(spec)}: this torch build or machine has no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {shown(spec)}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {shown(spec)}: MPS is not available here; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {shown(spec)} is not supported; use cpu, cuda, cuda:N or mps")
    return dev
