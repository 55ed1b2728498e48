"""Training: a deterministic, resumable loop with per-epoch checkpoints.

``fit`` is the library function behind ``bastion train``. What is minimised per batch is an
:class:`Objective` (plain cross-entropy by default); adversarial training and BaRT training plug in their
own objectives, so there is one training loop in bastion.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._checks import eval_mode, shown
from bastion._outputs import atomic_write, finite_json, nonfinite_message, remove_stale_temps
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError
from bastion.progress import Progress, no_progress

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of :func:`fit` (validated at construction).

    ``schedule="onecycle"`` rises linearly from 0 over the first ``warmup`` fraction of the steps, then falls
    linearly to 0; its first step has learning rate 0 (no update: a one-step run trains nothing). The shipped
    weights' recorded commands use it as it is, so it stays that way.
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["constant", "onecycle", "cosine"] = "onecycle"
    warmup: float = 0.3
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {shown(self.optimizer)}")
        if self.schedule not in ("constant", "onecycle", "cosine"):
            raise ConfigError(f"schedule must be constant, onecycle or cosine, got {shown(self.schedule)}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup must be in [0, 1), got {self.warmup}")

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate at optimisation step ``step`` of ``total``."""
        t = step / max(total, 1)
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * t))
        if t < self.warmup:  # one-cycle: linear up, then linear down to 0
            return self.lr * t / self.warmup
        return self.lr * (1 - t) / (1 - self.warmup)


@dataclass
class StepContext:
    """What an objective may know about where training is."""

    epoch: int
    step: int
    total_steps: int
    keys: Tensor
    seed: int
    steps_per_epoch: int = 0  # 0: unknown (an objective then assumes the run is one epoch)

    @property
    def progress(self) -> float:
        return self.step / max(self.total_steps, 1)


class Objective(Protocol):
    """The loss minimised on one batch. The model is in train mode when called."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]: ...


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
    """Plain training: mean cross-entropy on the clean batch."""
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": float((logits.argmax(1) == y).float().mean())}


@dataclass
class History:
    """Per-epoch metrics of a run."""

    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}


class EpochCallback(Protocol):
    """Called after every epoch with the model (in eval mode), that epoch's metrics and the earlier epochs'.

    It may add metrics to the dict it returns; returning ``{"rollback": True}`` restores the best
    checkpoint (by ``monitor``) and stops training. Callbacks should keep no state of their own (read it
    from ``history``), so that resumed runs behave like uninterrupted ones.
    """

    def __call__(
        self, model: nn.Module, epoch: int, metrics: dict[str, Any], history: list[dict[str, Any]]
    ) -> dict[str, Any]: ...


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageDataset, *, batch_size: int = 1000, device: str | torch.device = "cpu") -> float:
    """Clean top-1 accuracy of ``model`` on ``data`` (model evaluated in eval mode, its own mode restored)."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(data), batch_size):
            x = data.images[i : i + batch_size].to(device)
            y = data.labels[i : i + batch_size].to(device)
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(len(data), 1)


def _write_run(out: Path, checkpoint: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The run's checkpoint and metrics, each written atomically (never through a link); NaN or infinite
    metrics (a diverging run) are stored as null, with a warning."""
    atomic_write(out / CHECKPOINT, lambda tmp: torch.save(checkpoint, tmp))
    text, where = finite_json(metrics)
    if where:
        log.warning("%s", nonfinite_message(str(out / METRICS), where))
    atomic_write(out / METRICS, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _data_identity(train: ImageDataset) -> dict[str, Any]:
    """What a checkpoint records of its training data, so that a resumed run trains on the same images."""
    return {"name": train.name, "split": train.split, "n": len(train), "sha256": train.sha256}


def _objective_identity(objective: Any) -> str:
    """What a checkpoint records of its objective (and so of the defense trained with): its ``identity`` or
    ``to_dict()`` when it has one, else its name."""
    ident = getattr(objective, "identity", None)
    if ident is None and callable(getattr(objective, "to_dict", None)):
        ident = objective.to_dict()
    if ident is None:
        ident = getattr(objective, "__qualname__", type(objective).__qualname__)
    return json.dumps(ident, sort_keys=True, default=str)


def _model_identity(model: nn.Module) -> str:
    """A bastion model's architecture and options (dropout, hidden width: not all of them show in shapes)."""
    meta = getattr(model, "meta", None)
    return json.dumps({"arch": getattr(meta, "arch", type(model).__name__),
                       "arch_options": getattr(meta, "arch_options", {})}, sort_keys=True, default=str)


#: what a checkpoint records beyond config, data and shapes: (key, what a mismatch means, how to fix it)
_IDENTITY_CHECKS = (("model_options", "other model options", "use the same --model options (e.g. --dropout)"),
                    ("objective", "another objective (defense)", "use the same --defense options"))


def _check_resumable(path: Path, ckpt: dict[str, Any], config: TrainConfig, data: dict[str, Any],
                     model: nn.Module, identity: dict[str, str]) -> None:
    """Refuse to continue a checkpoint with another configuration, other data, another architecture or
    architecture options, or another objective (defense)."""
    saved, now = ckpt.get("config") or {}, asdict(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{path}: the run was started with other settings; changed: " + ", ".join(
            f"{k} {shown(saved.get(k))} -> {shown(now.get(k))}" for k in changed))
    old = ckpt.get("data")
    if old is not None and old != data:
        diff = [f"{k} {old.get(k)!r} -> {data.get(k)!r}" for k in ("name", "split", "n", "sha256") if old.get(k) != data.get(k)]
        raise ConfigError(f"{path}: the run was started on other training data; changed: {', '.join(diff)}")
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    if mine != theirs:
        raise ConfigError(f"{path}: the checkpoint holds another architecture ({len(theirs)} tensors) than the model "
                          f"being trained ({len(mine)}); use the same --model and options, or another --out")
    for key, meaning, advice in _IDENTITY_CHECKS:  # older checkpoints do not record these
        if ckpt.get(key) is not None and ckpt[key] != identity[key]:
            raise ConfigError(f"{path}: the run was started with {meaning}: {ckpt[key]} -> {identity[key]}; "
                              f"{advice}, or another --out")


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.weight_decay:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr)


def epoch_permutation(n: int, *, seed: int, epoch: int) -> Tensor:
    """The data order of ``epoch``: a pure function of (seed, epoch), so resumed runs see the same order."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def fit(
    model: nn.Module,
    train: ImageDataset,
    *,
    config: TrainConfig = TrainConfig(),
    objective: Objective = cross_entropy,
    val: ImageDataset | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: Progress = no_progress,
    callbacks: Sequence[EpochCallback] = (),
    monitor: str = "val_acc",
    record: dict[str, Any] | None = None,
    world: Any = None,
) -> History:
    """Train ``model`` in place and return its history.

    Deterministic: the data order is a function of ``(config.seed, epoch)``; torch's global RNG (used by
    dropout) is seeded inside a forked RNG state, so the caller's global RNG is left as it was, and its
    state is checkpointed. With ``out_dir``, a checkpoint is written atomically after every epoch, and
    ``resume=True`` continues from it exactly (a run killed mid-epoch loses at most that epoch).

    Args:
        model: the model to train (its parameters are updated in place; left in eval mode at the end).
        train: training data.
        config: hyper-parameters.
        objective: the per-batch loss (see :class:`Objective`).
        val: optional validation data; its clean accuracy is recorded as ``val_acc`` each epoch.
        out_dir: folder for ``checkpoint.pt`` and ``metrics.json``.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        device: where to train.
        progress: progress callback ``(task, done, total)``.
        callbacks: per-epoch hooks (e.g. catastrophic-overfitting detection).
        monitor: metric that chooses the best epoch (kept in the checkpoint for roll-backs).
        record: extra JSON-able facts stored in ``metrics.json`` (e.g. the command line).
        world: a :class:`bastion.distributed.World` for data-parallel training (None: one process).
    """
    device = torch.device(device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if world is None or world.rank == 0:  # what a run killed while writing its checkpoint left
            remove_stale_temps(out, (CHECKPOINT, METRICS), legacy=True)
    model.to(device)
    optimizer = _make_optimizer(model, config)
    n = len(train)
    if n == 0:
        raise ConfigError(f"the training set {train.name}:{train.split} is empty (check the split and data set)")
    steps_per_epoch = math.ceil(n / config.batch_size)
    identity = {"objective": _objective_identity(objective), "model_options": _model_identity(model)}
    run = _Run()
    if resume and out is not None and (out / CHECKPOINT).exists():
        run = _resume(out / CHECKPOINT, model, optimizer, config=config, train=train, identity=identity)
    if world is not None and world.distributed:
        _warn_per_shard(model, objective, world)
    data = _Batches(train, device=device, steps_per_epoch=steps_per_epoch, batch_size=config.batch_size, world=world)

    # the run's own RNG streams (dropout): forked and restored, the caller's global state untouched; on a GPU
    # the device's generator too (its state is not checkpointed: a resumed GPU run's dropout differs)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(config.seed)
        if cuda:
            torch.cuda.manual_seed(config.seed)
        if run.rng_state is not None:
            torch.set_rng_state(run.rng_state)
        for epoch in range(run.start_epoch, config.epochs):
            t0 = time.perf_counter()
            seen, sums, lr = _train_epoch(model, optimizer, objective, data, config=config, epoch=epoch,
                                          world=world, progress=progress)
            model.eval()
            if world is not None:  # every rank's share of the epoch's training metrics, not rank 0's alone
                seen, sums = world.sum_metrics(seen, sums, device=data.images.device)
            metrics: dict[str, Any] = {"epoch": epoch + 1, "lr_end": lr, "seconds": time.perf_counter() - t0}
            metrics.update({f"train_{k}": v / max(seen, 1) for k, v in sums.items()})
            if val is not None:
                metrics["val_acc"] = accuracy(model, val, batch_size=config.eval_batch_size, device=device)
            rollback = _end_of_epoch(model, run, epoch, metrics, callbacks, monitor)
            if out is not None and (world is None or world.rank == 0):
                _write_run(out, _checkpoint(model, optimizer, run, epoch, config=config, train=train,
                                            stopped=rollback, identity=identity),
                           {"config": asdict(config), "record": record or {}, "epochs": run.history.epochs})
            if rollback:
                break
    model.eval()
    return run.history


@dataclass
class _Run:
    """Where a run is: the next epoch, the history so far, the best weights by the monitored metric, and the
    random state to continue from (a resumed run)."""

    start_epoch: int = 0
    history: History = field(default_factory=History)
    best: tuple[float, dict[str, Tensor]] | None = None
    rng_state: Tensor | None = None


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, config: TrainConfig,
            train: ImageDataset, identity: dict[str, str]) -> _Run:
    """The run saved in the checkpoint ``path``, loaded into ``model`` and ``optimizer`` (after checking that it
    is the same run: configuration, data, architecture, objective)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    _check_resumable(path, ckpt, config, _data_identity(train), model, identity)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    run = _Run(start_epoch=int(ckpt["epoch"]) + 1, history=History(list(ckpt["history"])),
               rng_state=ckpt["rng_state"])
    if ckpt.get("best_state") is not None:
        run.best = (float(ckpt["best_score"]), ckpt["best_state"])
    if ckpt.get("stopped"):  # the run rolled back to its best epoch and stopped: it is finished
        log.info("%s: the run stopped after epoch %d (rolled back); nothing to resume", path, run.start_epoch)
        run.start_epoch = config.epochs
    else:
        log.info("resuming from %s at epoch %d", path, run.start_epoch + 1)
    return run


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, run: _Run, epoch: int, *, config: TrainConfig,
                train: ImageDataset, stopped: bool, identity: dict[str, str]) -> dict[str, Any]:
    """Everything :func:`_resume` needs to continue the run exactly after ``epoch``."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": run.history.epochs,
        "rng_state": torch.get_rng_state(),
        "config": asdict(config),
        "data": _data_identity(train),
        "best_score": run.best[0] if run.best else None,
        "best_state": run.best[1] if run.best else None,
        "stopped": bool(stopped and run.best is not None),
        **identity,
    }


def _warn_per_shard(model: nn.Module, objective: Objective, world: Any) -> None:
    """Say which parts of a multi-process run are drawn per process shard (valid, but not equal to one process)."""
    per_shard = [what for what, used in (
        ("dropout", any(isinstance(m, nn.Dropout | nn.Dropout2d) and m.p > 0 for m in model.modules())),
        ("BaRT barrages", (getattr(objective, "identity", None) or {}).get("objective") == "barrage"),
        ("adv_ratio < 1", getattr(objective, "ratio", 1.0) < 1.0)) if used]
    if per_shard:
        log.warning("%s: drawn per process shard, so this %d-process run is valid but differs from a "
                    "single-process one", ", ".join(per_shard), world.size)


@dataclass
class _Batches:
    """The training data on the device and how it is cut into (global, then per-process) batches."""

    train: ImageDataset
    device: torch.device
    steps_per_epoch: int
    batch_size: int
    world: Any = None

    def __post_init__(self) -> None:
        assert self.train.indices is not None
        self.images = self.train.images.to(self.device)
        self.labels = self.train.labels.to(self.device)
        self.keys = self.train.indices.to(self.device)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(global batch indices, this process's share of them), in the epoch's order."""
        perm = epoch_permutation(len(self.train), seed=seed, epoch=epoch).to(self.device)
        for b in range(self.steps_per_epoch):
            global_idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield global_idx, (self.world.shard(global_idx) if self.world is not None else global_idx)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective, data: _Batches, *,
                 config: TrainConfig, epoch: int, world: Any, progress: Progress) -> tuple[int, dict[str, float], float]:
    """One epoch of updates; returns (images seen by this process, per-metric sums over them, the last lr)."""
    sums: dict[str, float] = {}
    seen = 0
    lr = config.lr
    total_steps = data.steps_per_epoch * config.epochs
    for b, (global_idx, idx) in enumerate(data.epoch(config.seed, epoch)):
        step = epoch * data.steps_per_epoch + b
        x, y = data.images[idx], data.labels[idx]
        lr = config.lr_at(step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ctx = StepContext(epoch=epoch, step=step, total_steps=total_steps, keys=data.keys[idx], seed=config.seed,
                          steps_per_epoch=data.steps_per_epoch)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        bs = int(x.shape[0])
        if bs:
            loss, stats = objective(model, x, y, ctx)
            # Each process holds a shard of the global batch: weight its mean loss by its share and sum the
            # gradients over processes, so the update equals one process on the whole batch.
            (loss * (bs / global_idx.shape[0])).backward()
            seen += bs
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * bs
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * bs
        # (an empty shard, the last batch smaller than the process count: no loss, zero gradients)
        if world is not None:
            world.sum_gradients(model)
        optimizer.step()
        progress(f"epoch {epoch + 1}/{config.epochs}", b + 1, data.steps_per_epoch)
    return seen, sums, lr


def _end_of_epoch(model: nn.Module, run: _Run, epoch: int, metrics: dict[str, Any],
                  callbacks: Sequence[EpochCallback], monitor: str) -> bool:
    """Run the callbacks, keep the best weights by ``monitor``, roll back to them when a callback asks, and record
    the epoch in the history; returns whether training stops (a roll-back)."""
    rollback = False
    for cb in callbacks:
        extra = cb(model, epoch, metrics, run.history.epochs) or {}
        rollback = rollback or bool(extra.pop("rollback", False))
        metrics.update(extra)
    score = metrics.get(monitor)
    if score is not None and (run.best is None or float(score) >= run.best[0]):
        run.best = (float(score), {k: v.detach().clone().cpu() for k, v in model.state_dict().items()})
    if rollback and run.best is not None:
        log.warning("rolling back to the best epoch (%s=%.4f) and stopping", monitor, run.best[0])
        model.load_state_dict(run.best[1])
        metrics["rolled_back"] = True
    run.history.epochs.append(metrics)
    log.info("epoch %d: %s", epoch + 1, metrics)
    return rollback
