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

A stalled process ends the job instead of hanging it. Every process publishes a heartbeat (a counter in the job's
rendezvous store, the one torchrun or ``MASTER_ADDR:MASTER_PORT`` provides, bumped about once a second by a
background thread) and watches the others'. The process group has a timeout (``--dist-timeout SECONDS`` or the
``BASTION_DIST_TIMEOUT`` environment variable; default 300 s), so no collective waits longer than that; when one
fails, the error names the rank(s) whose heartbeat went silent, and the silent processes that run on the same
machine are ended with SIGKILL (a stopped process ignores torchrun's SIGTERM, which costs 30 s more, and without
torchrun it would stay behind for good). Before gathering the evaluation results a process waits for the others for
as long as they show signs of life (a shard can legitimately take much longer than another), and stops once one
has been silent for the timeout. A process that is alive but stuck elsewhere with its
heartbeat running is waited for; the group timeout still bounds every collective. The error is a
:class:`StalledProcessError` (one line on the command line; exit status 2).

Backend: ``nccl`` when CUDA is available, else ``gloo``. Launch, e.g.::

    torchrun --nproc_per_node 2 -m bastion evaluate --model mnist-cnn --images 1000
    torchrun --nproc_per_node 8 -m bastion evaluate --device cuda ...   # process i on cuda:LOCAL_RANK
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m bastion evaluate ...
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bastion.data.base import ImageDataset, _first_line
from bastion.errors import BastionError

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: seconds a collective may wait, and a silent process may stay silent, before the job stops
DEFAULT_TIMEOUT = 300.0
#: environment variable that sets the timeout when the caller passes none
TIMEOUT_ENV = "BASTION_DIST_TIMEOUT"


class LaunchError(BastionError):
    """The distributed environment is inconsistent (e.g. partly set, or rank >= world size), or the processes
    could not form their group."""


class StalledProcessError(BastionError):
    """Another process of a distributed job stopped answering (stopped, frozen or gone), so this one stops
    instead of waiting forever. The message names the rank(s)."""


def resolve_timeout(timeout: float | None = None) -> float:
    """The distributed timeout in seconds: ``timeout`` when given, else ``$BASTION_DIST_TIMEOUT``, else
    :data:`DEFAULT_TIMEOUT`. Must be a finite number > 0."""
    source = "the timeout"
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        source = TIMEOUT_ENV
        try:
            timeout = float(text)
        except ValueError:
            raise LaunchError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise LaunchError(f"{source} must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def heartbeat_key(rank: int, what: str = "heartbeat") -> str:
    """The store key under which ``rank`` publishes its heartbeat counter (``what="process"``: its host, pid
    and start time; ``"step/N"``: that it reached step N). A job restarted by torchrun uses fresh keys."""
    return f"bastion/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{what}/{rank}"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``; with the pid, it names one process for good, even
    after the pid is reused), or None where unknown or when the process has already exited (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


class _Heartbeat:
    """Publishes this process's heartbeat counter every ``interval`` seconds and watches the other ranks'.

    Runs on its own daemon thread with its own store connection (the main thread may be blocked in a
    collective). A peer is *silent* while its counter does not change; :meth:`silence` says for how long, as
    observed here (monotonic clock: no dependence on the hosts' clocks).
    """

    def __init__(self, store: Any, rank: int, size: int, interval: float) -> None:
        self.store, self.rank, self.size, self.interval = store, rank, size, interval
        self.peers = [r for r in range(size) if r != rank]
        now = time.monotonic()
        self._seen: dict[int, tuple[bytes | None, float]] = {r: (None, now) for r in self.peers}
        self._reached = now  # last time the store answered
        self._beats = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.store.set(heartbeat_key(rank, "process"), f"{socket.gethostname()}\t{os.getpid()}\t{_start_time(os.getpid())}")
        self._beat()  # before anyone can look for it
        self._thread = threading.Thread(target=self._run, name="bastion-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self._beats += 1
        self.store.set(heartbeat_key(self.rank), str(self._beats))

    def _watch(self) -> None:
        keys = [heartbeat_key(r) for r in self.peers]
        if self.store.check(keys):
            values: list[bytes | None] = list(self.store.multi_get(keys))
        else:  # a peer that has not published yet
            values = [self.store.get(k) if self.store.check([k]) else None for k in keys]
        now = time.monotonic()
        with self._lock:
            self._reached = now
            for r, v in zip(self.peers, values, strict=True):
                if v != self._seen[r][0]:
                    self._seen[r] = (v, now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
                self._watch()
            except Exception as e:  # the store is gone (the job is ending) or unreachable: stop quietly
                log.debug("heartbeat stopped: %s", _first_line(e))
                return

    def silence(self) -> tuple[dict[int, float], float]:
        """Seconds since each peer's heartbeat last changed, and since the store last answered."""
        now = time.monotonic()
        with self._lock:
            return {r: now - t for r, (_, t) in self._seen.items()}, now - self._reached

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self.interval))


@dataclass
class World:
    """Who this process is in a (possibly single-process) job."""

    rank: int = 0
    size: int = 1
    backend: str | None = None
    owns_group: bool = False
    local_rank: int = 0
    #: seconds a collective may wait, and another process may stay silent, before this one stops
    timeout: float = DEFAULT_TIMEOUT
    _store: Any = field(default=None, repr=False, compare=False)
    _heartbeat: _Heartbeat | None = field(default=None, repr=False, compare=False)
    _step_no: int = field(default=0, repr=False, compare=False)

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
    def from_env(cls, *, backend: str | None = None, device: str | torch.device | None = None,
                 timeout: float | None = None) -> World:
        """Join the process group described by torchrun's environment variables, or a single-process world.

        The backend (unless given) follows ``device``: ``nccl`` for CUDA devices, ``gloo`` for CPU ones (NCCL
        cannot reduce CPU tensors); without a device, ``nccl`` when CUDA is available. ``timeout`` (seconds;
        default ``$BASTION_DIST_TIMEOUT`` or 300) bounds every collective and how long another process may stay
        silent (see the module docstring)."""
        limit = resolve_timeout(timeout)
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
            try:
                dist.init_process_group(backend=chosen, timeout=timedelta(seconds=limit))
            except RuntimeError as e:  # e.g. a process that never joined: the rendezvous timed out
                raise LaunchError(f"the {size} processes could not form their group within {limit:g} s "
                                  f"({_first_line(e)})") from None
            owns = True
        if dist.get_world_size() != size or dist.get_rank() != rank:
            raise LaunchError("the process group disagrees with RANK/WORLD_SIZE")
        world = cls(rank=rank, size=size, backend=chosen, owns_group=owns, local_rank=local, timeout=limit)
        world._start_heartbeat()
        return world

    def _connect(self, timeout: float) -> Any:
        """A new client connection to the job's rendezvous store (torchrun's, or ``MASTER_ADDR:MASTER_PORT``)."""
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), None, False,
                             timedelta(seconds=timeout), wait_for_workers=False)

    def _start_heartbeat(self) -> None:
        interval = min(1.0, self.timeout / 10)
        try:
            self._store = self._connect(self.timeout)
            self._heartbeat = _Heartbeat(self._connect(max(2.0, 4 * interval)), self.rank, self.size, interval)
        except RuntimeError as e:
            raise LaunchError(f"cannot reach the job's rendezvous store at {os.environ['MASTER_ADDR']}:"
                              f"{os.environ['MASTER_PORT']} ({_first_line(e)})") from None

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.close()
            self._heartbeat = None
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ---- stalls -------------------------------------------------------------------------------------
    def _silent(self, at_least: float) -> tuple[list[int], float, bool]:
        """Ranks silent for ``at_least`` seconds, the longest silence among them, and whether the store
        itself stopped answering (then every peer looks silent from here)."""
        assert self._heartbeat is not None
        silence, store_silence = self._heartbeat.silence()
        if store_silence >= at_least:
            return [], store_silence, True
        quiet = sorted(r for r, s in silence.items() if s >= at_least)
        return quiet, max((silence[r] for r in quiet), default=0.0), False

    def _local_processes(self, ranks: list[int]) -> dict[int, int]:
        """The pids of those ``ranks`` that run on this machine: the same process by pid *and* start time, so
        that a reused pid is never taken for it."""
        found = {}
        for r in ranks:
            try:
                key = heartbeat_key(r, "process")
                if not self._store.check([key]):
                    continue
                host, pid, started = self._store.get(key).decode().split("\t")
                if host == socket.gethostname() and started != "None" and _start_time(int(pid)) == started:
                    found[r] = int(pid)
            except (RuntimeError, ValueError) as e:  # the store is gone, or a malformed entry
                log.debug("cannot locate rank %d: %s", r, _first_line(e))
        return found

    def _stalled(self, what: str, ranks: list[int], silent_for: float, *, store_lost: bool) -> StalledProcessError:
        """The error to raise, after closing this process's side of the group (unusable without the silent ranks)
        and ending the silent processes on this machine with SIGKILL (see the module docstring)."""
        local = {} if store_lost else self._local_processes(ranks)
        self.close()
        ended = []
        for r, pid in local.items():
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(r)
            except OSError as e:  # gone meanwhile, or not ours
                log.debug("could not end rank %d (pid %d): %s", r, pid, e)
        hint = f"(limit {self.timeout:g} s: --dist-timeout or {TIMEOUT_ENV})"
        if store_lost:
            return StalledProcessError(
                f"rank {self.rank} lost contact with the job's rendezvous store at {os.environ.get('MASTER_ADDR')}:"
                f"{os.environ.get('MASTER_PORT')} for {silent_for:.0f} s while waiting to {what} (the process "
                f"holding it, rank 0 or torchrun, stopped answering); stopping the job {hint}")
        killed = f"; ended {_ranks(ended)} on this machine" if ended else ""
        return StalledProcessError(
            f"{_ranks(ranks)} of the {self.size} processes stopped answering (no heartbeat for {silent_for:.0f} s: "
            f"stopped, frozen or gone) while rank {self.rank} waited to {what}; stopping the job {hint}{killed}")

    def _wait_for_peers(self, what: str) -> None:
        """Wait until every rank has reached this step, for as long as the missing ones show signs of life;
        raise :class:`StalledProcessError` once one has been silent for the timeout."""
        step = f"step/{self._step_no}"
        try:
            self._store.set(heartbeat_key(self.rank, step), "1")
            missing = [r for r in range(self.size) if r != self.rank]
            pause = 0.0005
            while missing := [r for r in missing if not self._store.check([heartbeat_key(r, step)])]:
                quiet, longest, lost = self._silent(self.timeout)
                gone = [r for r in quiet if r in missing]
                if gone or lost:
                    raise self._stalled(what, gone, longest, store_lost=lost)
                time.sleep(pause)
                pause = min(2 * pause, 0.05)
        except RuntimeError as e:  # the store connection itself failed
            self.close()
            raise StalledProcessError(f"rank {self.rank} lost contact with the job's other processes while "
                                      f"waiting to {what} ({_first_line(e)}); stopping the job") from None

    @contextmanager
    def _step(self, what: str, *, wait: bool = False) -> Iterator[None]:
        """Run one collective step (``what``: words after "waiting to"). With ``wait``, first wait for every
        rank to arrive (:meth:`_wait_for_peers`). A failing collective (the group timeout, a lost peer)
        becomes a :class:`StalledProcessError` naming the silent ranks."""
        if self._heartbeat is None:
            yield
            return
        self._step_no += 1
        if wait:
            self._wait_for_peers(what)
        try:
            yield
        except RuntimeError as e:
            # after the group timeout the stalled rank has long been silent; a process that died makes the
            # collective fail at once, and its heartbeat shows it within a few beats
            beat = self._heartbeat.interval
            give_up = time.monotonic() + 5 * beat
            while True:
                quiet, longest, lost = self._silent(3 * beat)
                if quiet or lost or time.monotonic() > give_up:
                    break
                time.sleep(beat / 2)
            if quiet or lost:
                raise self._stalled(what, quiet, longest, store_lost=lost) from None
            self.close()
            raise StalledProcessError(f"rank {self.rank} could not {what}: {_first_line(e)} (every other "
                                      "process still shows signs of life); stopping the job") from None

    # ---- evaluation ---------------------------------------------------------------------------------
    def shard_dataset(self, data: ImageDataset) -> ImageDataset:
        """This rank's images: positions ``rank, rank + size, ...`` (deterministic, balanced)."""
        if not self.distributed:
            return data
        return data.subset(torch.arange(self.rank, len(data), self.size), split=f"{data.split}<rank {self.rank}/{self.size}>")

    def gather_objects(self, obj: Any, *, what: str = "gather the evaluation results") -> list[Any]:
        """``obj`` from every rank, in rank order (just ``[obj]`` in a single process); ``what`` names the step in
        the error that a stalled process causes."""
        if not self.distributed:
            return [obj]
        parts: list[Any] = [None] * self.size
        with self._step(what, wait=True):
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
        with self._step("sum the epoch's training metrics", wait=True):
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
        with self._step("sum the gradients"):  # every step: no arrival wait (the processes go in lockstep)
            for p in model.parameters():
                if p.requires_grad:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def broadcast_model(self, model: nn.Module) -> None:
        """Make every rank start from rank 0's weights."""
        if not self.distributed:
            return
        with self._step("receive rank 0's starting weights", wait=True):
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)
