"""Scale-out on PyTorch's own distributed engine (``torch.distributed``, launched by ``torchrun``).

* Evaluation: each process evaluates a deterministic shard of the images (image ``i`` goes to rank
  ``i % world_size``); the attacks' per-image randomness is keyed by the image's index in its source split, so
  the gathered result is identical to a single-process run. Rank 0 writes the report. Exception: a
  randomized model (BaRT's ``Defended``) draws from its own generator call by call, so which transforms an
  image gets depends on its shard; such an evaluation is valid but not equal to a single-process one (a
  warning says so).
* Training: each process crafts adversarial examples for, and back-propagates through, its contiguous slice of
  every global batch; gradients are summed across processes (each process weights its loss by its share of
  the batch), so an update equals one process on the whole batch, up to float rounding, for plain and
  adversarial training without dropout. Dropout masks, BaRT barrage draws and ``adv_ratio < 1`` (the first
  images *of each shard* are made adversarial) are drawn per shard instead: such runs are valid but differ
  from a single-process run (a warning says so). Rank 0 writes checkpoints, which hold no rank-specific state
  apart from the random state of rank 0, so ``--resume`` works with a different number of processes (with
  dropout, a resumed multi-process run's masks differ from an uninterrupted one's).

Backend: ``nccl`` when CUDA is available, else ``gloo``. Launch, e.g.::

    torchrun --nproc_per_node 2 -m bastion evaluate --model mnist-cnn --images 1000
    torchrun --nproc_per_node 8 -m bastion evaluate --device cuda ...   # process i on cuda:LOCAL_RANK
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m bastion evaluate ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bastion.data.base import ImageDataset
from bastion.errors import BastionError

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(BastionError):
    """The distributed environment is inconsistent (e.g. partly set, or rank >= world size)."""


@dataclass
class World:
    """Who this process is in a (possibly single-process) job."""

    rank: int = 0
    size: int = 1
    backend: str | None = None
    owns_group: bool = False
    local_rank: int = 0

    def device(self, spec: str | torch.device) -> torch.device:
        """The device this process should use for ``spec``: a bare ``"cuda"`` becomes ``cuda:LOCAL_RANK`` in a
        multi-process job (one GPU per process, as torchrun lays them out); anything else is kept."""
        dev = torch.device(spec)
        if dev.type == "cuda" and dev.index is None and self.distributed:
            return torch.device("cuda", self.local_rank)
        return dev

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, *, backend: str | None = None, device: str | torch.device | None = None) -> World:
        """Join the process group described by torchrun's environment variables, or a single-process world.

        The backend (unless given) follows ``device``: ``nccl`` for CUDA devices, ``gloo`` for CPU ones (NCCL
        cannot reduce CPU tensors); without a device, ``nccl`` when CUDA is available."""
        present = [k for k in _ENV if k in os.environ]
        if not present:
            return cls()
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise LaunchError(f"incomplete distributed environment: {present} set but {missing} missing; "
                              "launch with torchrun (or unset these variables for a single process)")
        try:
            rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except ValueError:
            raise LaunchError("RANK and WORLD_SIZE must be integers") from None
        if size < 1 or not 0 <= rank < size:
            raise LaunchError(f"RANK={rank} is not in [0, WORLD_SIZE={size})")
        if size == 1:
            return cls()
        on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        chosen = backend or ("nccl" if on_cuda and torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", rank))
        if chosen == "nccl":
            torch.cuda.set_device(local)
        owns = False
        if not dist.is_initialized():
            dist.init_process_group(backend=chosen)
            owns = True
        if dist.get_world_size() != size or dist.get_rank() != rank:
            raise LaunchError("the process group disagrees with RANK/WORLD_SIZE")
        return cls(rank=rank, size=size, backend=chosen, owns_group=owns, local_rank=local)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ---- evaluation ---------------------------------------------------------------------------------
    def shard_dataset(self, data: ImageDataset) -> ImageDataset:
        """This rank's images: positions ``rank, rank + size, ...`` (deterministic, balanced)."""
        if not self.distributed:
            return data
        return data.subset(torch.arange(self.rank, len(data), self.size), split=f"{data.split}<rank {self.rank}/{self.size}>")

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (just ``[obj]`` in a single process)."""
        if not self.distributed:
            return [obj]
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, obj)
        return parts

    # ---- training -----------------------------------------------------------------------------------
    def shard(self, idx: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch of indices."""
        if not self.distributed:
            return idx
        return idx.tensor_split(self.size)[self.rank]

    def sum_metrics(self, seen: int, sums: dict[str, float], *, device: torch.device) -> tuple[int, dict[str, float]]:
        """``seen`` and the per-key ``sums`` of a training epoch, summed over processes (same keys on each)."""
        if not self.distributed:
            return seen, sums
        every: list[Any] = [None] * self.size
        dist.all_gather_object(every, sorted(sums))  # a process with only empty shards has no keys
        keys = sorted(set().union(*every))
        t = torch.tensor([float(seen), *(sums.get(k, 0.0) for k in keys)], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        vals = t.tolist()
        return int(vals[0]), dict(zip(keys, vals[1:], strict=True))

    def sum_gradients(self, model: nn.Module) -> None:
        """Sum every trainable parameter's gradient over processes. A process whose shard was empty (or that
        did not use a parameter) contributes zeros, so all processes join the same collectives."""
        if not self.distributed:
            return
        for p in model.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def broadcast_model(self, model: nn.Module) -> None:
        """Make every rank start from rank 0's weights."""
        if not self.distributed:
            return
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
