"""The substitute-model attack of Papernot et al. 2017, "Practical Black-Box Attacks against Machine
Learning" (https://arxiv.org/abs/1602.02697).

The attacker sees only the target's *labels*, through a query-counting
:class:`~bastion.attacks.oracle.Oracle` (``output="labels"``), and owns a small seed set
of unlabelled inputs (e.g. 150 MNIST digits). It trains a substitute model of its own:

1. label the seed set ``S_0`` with the oracle;
2. for each substitute epoch ``rho = 0 .. rounds-1``: train the substitute on ``(S_rho, O(S_rho))``; then
   grow the set by Jacobian-based dataset augmentation,
   ``S_{rho+1} = S_rho ∪ {clip(x + lambda_rho * sign(d F_{O(x)}(x) / dx)) : x in S_rho}``, and label the new
   points with the oracle. ``lambda_rho = lambda * (-1) ** (rho // tau)`` (the periodic step size of the
   paper's section 5); after ``reservoir_after`` augmentations only ``reservoir`` randomly chosen points
   are augmented per round (the paper's reservoir sampling), which bounds the queries;
3. craft adversarial examples white-box on the substitute (FGSM, PGD, ...) and transfer them to the target.

The query budget ``max_queries`` is a hard cap: the seed labels count, and an augmentation that would
exceed the budget is cut to a random subset of the candidates that fits exactly.

Because only labels are used, output masking defenses such as
:class:`~bastion.defenses.HideProbabilities`, which zero the gradient, do not stop this attack.

Two ways to use it:

* :meth:`SubstituteTraining.train` trains once and returns a :class:`Substitute`;
  ``substitute.transfer(FGSM(eps=0.3))`` is then an ordinary :class:`~bastion.attacks.transfer.TransferAttack`
  that can be run on any number of batches;
* :class:`SubstituteAttack` is itself an :class:`~bastion.attacks.base.Attack`: each call trains a new
  substitute from its seed set (spending the query budget again) and transfers to that batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._checks import check_eval_mode, check_images, frozen, shown
from bastion._rng import seed_from
from bastion.attacks.base import (
    Access,
    Attack,
    Outcome,
    QueryAttack,
    Task,
    WrappingAttack,
    check_int,
    positive,
    whole,
)
from bastion.attacks.oracle import Oracle, OracleOutput
from bastion.attacks.transfer import TransferAttack, craft_on_source
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError, LabelError
from bastion.models import ARCHITECTURES, create_model
from bastion.progress import Progress, no_progress
from bastion.threat import ThreatModel
from bastion.training.loop import TrainConfig, accuracy, fit

log = logging.getLogger(__name__)

#: called after each round with the substitute (eval mode); returns extra metrics for the history
Monitor = Callable[[nn.Module], dict[str, Any]]


class _LabelBudget:
    """Label queries through an :class:`~bastion.attacks.oracle.Oracle` under one *total* budget, planned by
    the caller (exceeding it is an internal error); each queried point is its own oracle sample (one query)."""

    def __init__(self, oracle: Oracle, *, max_queries: int, num_classes: int, batch_size: int = 1000) -> None:
        if oracle.output != "labels":
            raise ConfigError("the substitute attack learns from labels: it needs an Oracle with output='labels'")
        self.oracle = oracle
        self.max_queries = max_queries
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.queries = 0
        self._first = oracle.total  # the oracle's samples this training charges start after those already used

    def __call__(self, x: Tensor) -> Tensor:
        n = int(x.shape[0])
        start = self.queries
        if start + n > self.max_queries:  # never expected: callers plan within the budget
            raise RuntimeError(f"{n} label queries would exceed the budget ({start}/{self.max_queries} used)")
        out = []
        for i in range(0, n, self.batch_size):
            xb = x[i : i + self.batch_size]
            base = self._first + start + i
            idx = torch.arange(base, base + xb.shape[0], device=x.device)
            out.append(self.oracle(xb, idx).to(x.device))
        self.queries += n
        labels = torch.cat(out)
        if int(labels.max()) >= self.num_classes:
            raise LabelError(f"the target returned label {int(labels.max())}, but {self.num_classes} classes were "
                             "expected (set SubstituteTraining(num_classes=...))")
        return labels


def jacobian_augmentation(substitute: nn.Module, x: Tensor, labels: Tensor, lam: float, *,
                          bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 500) -> Tensor:
    """New points ``clip(x + lam * sign(d F_label(x) / dx))`` (Papernot et al. 2017, eq. 4).

    ``F_label`` is the substitute's probability of the oracle's label; the sign of its gradient equals the
    sign of the gradient of its log, which is what is computed (numerically stable when the softmax
    saturates). The substitute must be in eval mode; its parameters get no ``.grad``.
    """
    check_eval_mode(substitute)
    out = []
    with frozen(substitute):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].detach().requires_grad_(True)
            logp = F.log_softmax(substitute(xb), dim=1)
            sel = logp.gather(1, labels[i : i + batch_size, None]).sum()
            (grad,) = torch.autograd.grad(sel, xb)
            out.append((xb.detach() + lam * grad.sign()).clamp(*bounds))
    return torch.cat(out)


def pick_seed_set(data: ImageDataset, per_class: int, *, generator: torch.Generator | None = None) -> ImageDataset:
    """``per_class`` random images of each class of ``data`` (the attacker's own labelled data).

    The selection is a function of the generator's state only (seed 0 without one); the result keeps the
    original ``indices`` for provenance.
    """
    check_int("per_class", per_class)
    g = torch.Generator().manual_seed(seed_from(generator))
    chosen = []
    for c in range(data.num_classes):
        idx = (data.labels == c).nonzero().squeeze(1)
        if idx.numel() < per_class:
            raise ConfigError(f"class {c} has only {idx.numel()} images in {shown(data)}; cannot pick {per_class}")
        chosen.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]].sort().values)
    return data.subset(torch.cat(chosen), split=f"{data.split}<seed set, {per_class} per class>")


@dataclass(frozen=True, eq=False)
class Substitute:
    """A trained substitute and what it cost.

    Attributes:
        model: the substitute classifier (eval mode, on the training device).
        queries: label queries spent on the target (seed labels included).
        history: one dict per substitute epoch (round): training-set size, queries so far, lambda,
            substitute agreement with the oracle labels on its training set, seconds, and monitor metrics.
        images: the final substitute training set ``S`` (seed set first, then augmented points in order).
        labels: the oracle's labels of ``images``.
        seconds: total wall time of the training.
    """

    model: nn.Module
    queries: int
    history: tuple[dict[str, Any], ...]
    images: Tensor
    labels: Tensor
    seconds: float

    def transfer(self, attack: Attack) -> TransferAttack:
        """``attack`` crafted on this substitute, as a :class:`TransferAttack` (no further target queries)."""
        return TransferAttack(source=self.model, attack=attack)


def _check_arch(name: str, arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown substitute architecture {shown(arch)}; valid: {', '.join(ARCHITECTURES)}")


def _check_options(name: str, options: Any) -> None:
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"{name} must be a dict of keyword options, got {shown(options)}")


@dataclass(frozen=True, kw_only=True)
class SubstituteTraining:
    """How the substitute is trained (Papernot et al. 2017, Algorithm 1).

    Args:
        rounds: substitute epochs ``rho_max`` (each trains on the current set; all but the last are followed
            by an augmentation).
        lam: the augmentation step ``lambda`` (0.1 in the paper).
        tau: flip the sign of ``lambda`` every ``tau`` rounds (the paper's periodic step size); None
            keeps it positive.
        max_queries: hard cap on label queries, seed labels included (6,400 by default).
        arch: substitute architecture, a name of :data:`bastion.models.ARCHITECTURES`.
        arch_options: options of the architecture (e.g. ``{"dropout": 0.5}`` for ``mnist-cnn``).
        dataset: the data set the architecture is built for (sets input shape and normalization).
        epochs_per_round: training epochs over the current set in each round (the model is trained
            further each round, not re-initialised, with a fresh optimizer).
        batch_size: training batch size.
        lr: Adam learning rate (one-cycle schedule per round).
        reservoir: ``kappa``: after ``reservoir_after`` augmentations, augment only this many randomly
            chosen points per round (None: always augment every point).
        reservoir_after: ``sigma`` of the paper.
        num_classes: number of classes of the task (default: the target's declared ``.classes``).
        bounds: the valid input range (augmented points are clipped to it).

    Example:
        >>> sub = SubstituteTraining(rounds=6).train(target, seed_images, generator=g)   # doctest: +SKIP
        >>> res = sub.transfer(FGSM(eps=0.3))(target, x, y)                             # doctest: +SKIP
    """

    rounds: int = whole(6)
    lam: float = positive(0.1)
    tau: int | None = whole(3, optional=True)
    max_queries: int = whole(6400)
    arch: str = field(default="mnist-cnn", metadata={"check": _check_arch})
    arch_options: dict[str, Any] = field(default_factory=dict, metadata={"check": _check_options})
    dataset: str = "mnist"
    epochs_per_round: int = whole(10)
    batch_size: int = whole(128)
    lr: float = positive(1e-3)
    reservoir: int | None = whole(None, optional=True)
    reservoir_after: int = whole(3, minimum=0)
    num_classes: int | None = whole(None, minimum=2, optional=True)
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for f in fields(self):  # the checks declared with the fields, in their order
            if "check" in f.metadata:
                f.metadata["check"](f.name, getattr(self, f.name))
        _ = ThreatModel(eps=0.0, bounds=self.bounds)  # validates the bounds

    def __repr__(self) -> str:  # only what differs from the defaults, so nested reprs stay short
        default = SubstituteTraining()
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != getattr(default, f.name)]
        return f"SubstituteTraining({', '.join(changed)})"

    def lam_at(self, rnd: int) -> float:
        """The augmentation step after round ``rnd`` (0-based), with the periodic sign flip."""
        return self.lam if self.tau is None else self.lam * (-1.0) ** (rnd // self.tau)

    def planned_queries(self, n_seed: int) -> int:
        """Label queries the training will spend with ``n_seed`` seed images (at most ``max_queries``)."""
        n, total = n_seed, n_seed
        for rnd in range(self.rounds - 1):
            cand = n if self.reservoir is None or rnd < self.reservoir_after else min(self.reservoir, n)
            new = min(cand, self.max_queries - total)
            n, total = n + new, total + new
        return total

    def train(
        self,
        target: nn.Module | Oracle,
        seed_images: Tensor,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        progress: Progress = no_progress,
        monitor: Monitor | None = None,
    ) -> Substitute:
        """Train a substitute of ``target`` from its labels only.

        Args:
            target: the model under attack (eval mode), or a label :class:`~bastion.attacks.oracle.Oracle` of
                it. A model is only called under ``no_grad`` through a label oracle that counts queries; its mode,
                flags and parameters are left as they were.
            seed_images: the attacker's unlabelled seed set ``S_0``, (N, C, H, W) in ``bounds``.
            generator: randomness (substitute initialisation, data order, reservoir and budget subsets);
                the same generator state gives the same substitute.
            device: where to train (default: the seed images' device); the target must accept inputs there.
            progress: ``progress(task, done, total)`` per training batch.
            monitor: called after each round with the substitute (eval mode); the metrics it returns are
                added to that round's history (e.g. test accuracy; its cost is not a target query).

        Returns:
            A :class:`Substitute` (model, queries, per-round history, final training set).

        Raises:
            ConfigError: the seed set is larger than the query budget or does not fit the architecture, or
                the number of classes is unknown (the target declares no ``.classes`` and ``num_classes``
                is None).
        """
        t_start = time.perf_counter()
        check_images(seed_images, bounds=self.bounds, name="seed_images")
        if isinstance(target, nn.Module):
            check_eval_mode(target)
        n_seed = int(seed_images.shape[0])
        if n_seed > self.max_queries:
            raise ConfigError(f"the seed set has {n_seed} images but max_queries is {self.max_queries}; "
                              "labelling the seed set alone would exceed the budget")
        dev = torch.device(device) if device is not None else seed_images.device
        g = torch.Generator().manual_seed(seed_from(generator))

        def draw() -> int:
            return int(torch.randint(0, 2**31 - 1, (1,), generator=g).item())

        classes = _class_names(target, self.num_classes)
        substitute = create_model(self.arch, dataset=self.dataset, classes=classes, seed=draw(), **self.arch_options)
        shape = tuple(substitute.meta.input_shape)
        if shape != tuple(seed_images.shape[1:]):  # checked before spending any query
            raise ConfigError(
                f"substitute architecture {shown(self.arch)} for {shown(self.dataset)} takes inputs of shape {shape}, "
                f"but the seed images have shape {tuple(seed_images.shape[1:])}"
            )
        substitute = substitute.to(dev)
        labeller = target if isinstance(target, Oracle) else Oracle(target, output="labels")
        oracle = _LabelBudget(labeller, max_queries=self.max_queries, num_classes=len(classes))
        images = seed_images.detach().to(dev).clone()
        history: list[dict[str, Any]] = []
        with frozen(target) if isinstance(target, nn.Module) else contextlib.nullcontext():
            labels = oracle(images)
            for rnd in range(self.rounds):
                t0 = time.perf_counter()
                data = ImageDataset(name="substitute", split=f"round{rnd}", images=images, labels=labels,
                                    classes=classes)
                cfg = TrainConfig(epochs=self.epochs_per_round, batch_size=self.batch_size, lr=self.lr, seed=draw())

                def report(task: str, done: int, total: int | None, _r: int = rnd) -> None:
                    progress(f"substitute round {_r + 1}/{self.rounds}, {task}", done, total)

                fit(substitute, data, config=cfg, device=dev, progress=report)
                entry: dict[str, Any] = {
                    "round": rnd + 1,
                    "train_size": int(images.shape[0]),
                    "queries": oracle.queries,
                    "train_agreement": accuracy(substitute, data, device=dev),
                }
                if rnd < self.rounds - 1:
                    remaining = self.max_queries - oracle.queries
                    n = int(images.shape[0])
                    if self.reservoir is not None and rnd >= self.reservoir_after:
                        cand = torch.randperm(n, generator=g)[: min(self.reservoir, n)].sort().values
                    else:
                        cand = torch.arange(n)
                    if cand.numel() > remaining:
                        cand = cand[torch.randperm(cand.numel(), generator=g)[:remaining]].sort().values
                    entry.update(lam=self.lam_at(rnd), augmented=int(cand.numel()))
                    if cand.numel():
                        cand = cand.to(dev)
                        new = jacobian_augmentation(substitute, images[cand], labels[cand], entry["lam"],
                                                    bounds=self.bounds)
                        labels = torch.cat([labels, oracle(new)])
                        images = torch.cat([images, new])
                entry["seconds"] = time.perf_counter() - t0
                if monitor is not None:
                    entry.update(monitor(substitute))
                history.append(entry)
                log.info("substitute round %d/%d: %s", rnd + 1, self.rounds, entry)
        substitute.eval()
        return Substitute(model=substitute, queries=oracle.queries, history=tuple(history), images=images,
                          labels=labels, seconds=time.perf_counter() - t_start)


def _class_names(target: nn.Module | Oracle, num_classes: int | None) -> tuple[str, ...]:
    """The label set of the substitute: ``num_classes`` labels, else the target's declared ``.classes``
    (part of the task the attacker knows; a label oracle cannot reveal classes it never returns)."""
    declared = getattr(target, "classes", None)
    if num_classes is not None:
        if isinstance(declared, (tuple, list)) and len(declared) == num_classes:
            return tuple(str(c) for c in declared)
        return tuple(str(i) for i in range(num_classes))
    if isinstance(declared, (tuple, list)) and len(declared) >= 2:
        return tuple(str(c) for c in declared)
    raise ConfigError(f"{type(target).__name__} declares no .classes; pass SubstituteTraining(num_classes=...)")


def _spread(total: int, n: int, device: torch.device) -> Tensor:
    """``n`` per-sample counts summing exactly to ``total`` (the shared training cost, amortised)."""
    q = torch.full((n,), total // n, dtype=torch.int64, device=device)
    q[: total % n] += 1
    return q


def _tensor_digest(x: Tensor) -> str:
    return hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, eq=False)
class SubstituteAttack(WrappingAttack, QueryAttack):
    """Papernot et al. 2017's black-box attack as one :class:`~bastion.attacks.base.Attack`: label-only.

    Each call trains a substitute of the target from ``seed_images`` and the target's labels (at most
    ``training.max_queries`` queries), then runs ``attack`` white-box on the substitute and returns those
    examples. ``AttackResult.queries`` spreads the training queries over the batch (their sum is the
    number spent); the examples themselves cost no query. To attack several batches with one substitute,
    train it once, ``substitute = atk.training.train(target, atk.seed_images)``, and use
    ``substitute.transfer(attack)``.

    Args:
        attack: the attack run on the substitute (e.g. ``FGSM(eps=0.3)``); it sets the threat model.
        seed_images: the attacker's seed set ``S_0`` (N, C, H, W), e.g. 150 images, 15 per class (see
            :func:`pick_seed_set`); copied at construction.
        training: the substitute training configuration.

    Example:
        >>> seed = pick_seed_set(load_dataset("mnist-5k", "train"), 15).images      # doctest: +SKIP
        >>> atk = SubstituteAttack(attack=FGSM(eps=0.3), seed_images=seed)         # doctest: +SKIP
        >>> res = atk(HideProbabilities(pretrained("mnist-cnn")), x, y)            # doctest: +SKIP
    """

    name: ClassVar[str] = "substitute"
    access: ClassVar[Access] = "label"
    output: ClassVar[OracleOutput] = "labels"
    attack: Attack
    seed_images: Tensor
    training: SubstituteTraining = SubstituteTraining()

    def __post_init__(self) -> None:
        if not isinstance(self.attack, Attack):
            raise ConfigError(f"attack must be a bastion Attack (e.g. FGSM(eps=0.3)), got {type(self.attack).__name__}")
        if not isinstance(self.training, SubstituteTraining):
            raise ConfigError(f"training must be a SubstituteTraining, got {type(self.training).__name__}")
        check_images(self.seed_images, bounds=self.training.bounds, name="seed_images")
        if self.seed_images.shape[0] > self.training.max_queries:
            raise ConfigError(f"{self.seed_images.shape[0]} seed images exceed max_queries={self.training.max_queries}")
        object.__setattr__(self, "seed_images", self.seed_images.detach().clone())

    def _query(self, oracle: Oracle, task: Task) -> Outcome:
        x = task.x
        g = torch.Generator().manual_seed(task.seed)
        training = replace(self.training, num_classes=task.num_classes)
        sub = training.train(oracle, self.seed_images.to(x.device), generator=g, device=x.device)
        x_adv = craft_on_source(self.attack, sub.model, task)
        return Outcome(x_adv, _spread(sub.queries, x.shape[0], x.device))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able configuration (the seed set is described by its size, shape and a digest)."""
        s = self.seed_images
        return {
            "attack": self.name,
            "inner": self.attack.to_dict(),
            "seed_images": {"n": int(s.shape[0]), "shape": list(s.shape[1:]), "sha256_16": _tensor_digest(s)},
            "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.training).items()},
        }

    def __repr__(self) -> str:
        return (f"SubstituteAttack(attack={self.attack!r}, seed_images=<{self.seed_images.shape[0]} images>, "
                f"training={self.training!r})")


__all__ = [
    "SubstituteAttack",
    "SubstituteTraining",
    "Substitute",
    "jacobian_augmentation",
    "pick_seed_set",
]
