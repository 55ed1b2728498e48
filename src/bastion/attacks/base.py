"""The attack contract: configuration objects called with a model and a batch.

Every attack is an immutable, keyword-only, validated configuration. The model and the data come with
each call, targeting is a per-call argument, and randomness comes only from an explicit
``torch.Generator`` (see :mod:`bastion._rng`).

Three families share one call (:meth:`Attack.__call__`), which checks the inputs, prepares a :class:`Task`
and judges the result:

* white-box attacks (:class:`GradientAttack` for the norm-ball attacks FGSM, BIM, PGD; JSMA, min-norm PGD)
  get the model itself in :meth:`Attack._run`;
* :class:`QueryAttack` (score- or label-only: Square, HopSkipJump, the substitute attack) get only a
  query-counting :class:`~bastion.attacks.oracle.Oracle` built by the base class, never the model;
* transfer attacks get neither: they craft on a model of their own.

Randomized models (a BaRT barrage, noise injection: their output changes from call to call on the same input)
are detected (:mod:`bastion._model`), attacked without early stopping (a success seen under one random draw
is often undone by the next), and judged over several draws: ``logits_adv`` is the log of the mean softmax over
``draws`` calls (``success`` and ``robust`` follow its argmax, the mean-probability prediction), and
``robust_share`` is the share of the draws that still classify each input correctly; the accuracies of
:meth:`AttackResult.summary` are the means of those shares.

Calling an attack never changes the caller's tensors, the model's mode, or its parameters'
``requires_grad`` flags, and leaves no ``.grad`` on parameters. A model in training mode is refused with a
:class:`~bastion.errors.ModelModeError` (call ``model.eval()``); bastion never silently switches modes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass, replace
from functools import partial
from typing import Any, ClassVar, Literal, Self, final

import torch
from torch import Tensor, nn

from bastion._checks import check_eval_mode, check_images, check_labels, frozen, shown
from bastion._model import (
    DEFAULT_DRAWS,
    PROBE_SAMPLES,
    checked_forward,
    declared_randomized,
    judge,
    probe_randomized,
)
from bastion._rng import keyed_uniform, seed_from
from bastion.attacks.losses import LOSSES
from bastion.attacks.oracle import Oracle, OracleOutput
from bastion.errors import ConfigError, LabelError
from bastion.threat import ThreatModel, perturbation_norms

TargetSpec = Tensor | Literal["random", "least-likely"] | None
#: "white-box" (needs gradients), "score" (needs scores), "label" (needs only labels), "transfer" (needs nothing)
Access = Literal["white-box", "score", "label", "transfer"]


@dataclass(frozen=True, eq=False)
class AttackResult:
    """What an attack returns for a batch of B inputs.

    Attributes:
        x_adv: adversarial inputs, same shape, dtype and device as ``x``.
        success: bool (B,): misclassified (untargeted) or classified as the target (targeted), by the
            model's output at ``x_adv`` (on a randomized model: its mean-probability prediction over ``draws``).
        logits_adv: model outputs at ``x_adv`` (B, K); on a randomized model the log of the mean softmax over
            the draws.
        logits_clean: model outputs at ``x`` (B, K), likewise.
        norms: per-sample ``"l0"``, ``"l2"``, ``"linf"`` of ``x_adv - x`` (float64, (B,)).
        queries: int64 (B,), model evaluations the attack itself spent on each sample (bastion's own
            clean and final evaluations, and the few calls that check whether a model is randomized, are not
            counted).
        seconds: wall time of the attack.
        y: true labels; ``target``: target labels or None.
        preds_adv: (draws, B) the class each judging draw predicts at ``x_adv`` (one row on a deterministic
            model); ``preds_clean`` likewise at ``x``.
    """

    x_adv: Tensor
    success: Tensor
    logits_adv: Tensor
    logits_clean: Tensor
    norms: dict[str, Tensor]
    queries: Tensor
    seconds: float
    y: Tensor
    target: Tensor | None = None
    preds_adv: Tensor | None = None
    preds_clean: Tensor | None = None

    @property
    def pred_adv(self) -> Tensor:
        return self.logits_adv.argmax(1)

    @property
    def pred_clean(self) -> Tensor:
        return self.logits_clean.argmax(1)

    @property
    def draws(self) -> int:
        """How many calls of the model judged the result (1 on a deterministic model)."""
        return 1 if self.preds_adv is None else int(self.preds_adv.shape[0])

    @property
    def robust(self) -> Tensor:
        """bool (B,): still classified correctly after the attack (mean-probability prediction)."""
        return self.pred_adv == self.y

    @property
    def robust_share(self) -> Tensor:
        """float (B,): share of the judging draws that classify ``x_adv`` correctly (0 or 1 when deterministic)."""
        preds = self.pred_adv[None] if self.preds_adv is None else self.preds_adv
        return (preds == self.y).float().mean(0)

    @property
    def clean_share(self) -> Tensor:
        """float (B,): share of the judging draws that classify ``x`` correctly."""
        preds = self.pred_clean[None] if self.preds_clean is None else self.preds_clean
        return (preds == self.y).float().mean(0)

    def select(self, idx: Tensor) -> AttackResult:
        """The result for the inputs ``idx`` (indices into the batch), in that order."""
        def pick(v: Any, dim: int) -> Any:  # per-draw predictions are (draws, B): inputs along dim 1
            if isinstance(v, dict):
                return {k: pick(t, dim) for k, t in v.items()}
            return v.index_select(dim, idx.to(v.device)) if isinstance(v, Tensor) else v
        return AttackResult(**{f.name: pick(getattr(self, f.name), int(f.name.startswith("preds_")))
                               for f in fields(self)})

    def summary(self) -> dict[str, float | None]:
        """Batch averages: clean/robust accuracy (on a randomized model: expected over its randomness, the mean
        share of correct draws), success rate, mean norms (``mean_<norm>`` over every input,
        ``mean_<norm>_success`` over the successful ones, None when there are none), seconds, mean queries,
        and the number of judging draws."""
        ok = self.success.to(self.norms["l0"].device)
        return {
            "n": int(self.y.shape[0]),
            "clean_accuracy": float(self.clean_share.mean()),
            "robust_accuracy": float(self.robust_share.mean()),
            "success_rate": float(self.success.float().mean()),
            **{f"mean_{k}": float(v.mean()) for k, v in self.norms.items()},
            **{f"mean_{k}_success": float(v[ok].mean()) if bool(ok.any()) else None for k, v in self.norms.items()},
            "seconds": self.seconds,
            "mean_queries": float(self.queries.float().mean()),
            "draws": self.draws,
        }


@dataclass(frozen=True, eq=False)
class Task:
    """One attack call's work, checked and prepared by :meth:`Attack.__call__`.

    Attributes:
        x: the inputs (detached, inside the threat model's bounds); ``y`` their labels.
        target: target labels, or None (untargeted).
        keys: int64 per-sample randomness keys; ``seed``: the call's seed (see :mod:`bastion._rng`).
        num_classes: the model's number of outputs.
        randomized: the model's output changes from call to call on the same input.
        may_stop_early: whether freezing a sample at its first success is sound: False on a randomized model
            (the next draw may undo it) and when the result is judged on another model (a transfer attack).
        draws: how many calls of the model judge a point (1 on a deterministic model).
    """

    x: Tensor
    y: Tensor
    target: Tensor | None
    keys: Tensor
    seed: int
    num_classes: int
    randomized: bool = False
    may_stop_early: bool = True
    draws: int = 1

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: Tensor) -> Task:
        """The task restricted to the samples ``idx`` (same seed: keyed randomness follows the samples)."""
        return dataclasses.replace(self, x=self.x[idx], y=self.y[idx], keys=self.keys[idx],
                                   target=None if self.target is None else self.target[idx])

    def success(self, logits: Tensor, idx: Tensor | None = None) -> Tensor:
        """bool: the attack's goal is met at outputs ``logits`` (of the samples ``idx``, default all)."""
        y = self.y if idx is None else self.y[idx]
        target = self.target if self.target is None or idx is None else self.target[idx]
        return is_success(logits, y, target)

    def target_runs(self, model: nn.Module, k: int) -> tuple[Tensor | None, list[Tensor | None]]:
        """The targets of an attack run once towards each of ``k`` classes (APGD-T, FAB-T), and the clean outputs
        when it computed them (one query; else None): the call's own target (None: untargeted) when it has one
        or ``k`` is 0, else AutoAttack's targets: for each ``j < k``, the class the model ranks ``j + 1``-th after
        the true one on the clean input (at most ``num_classes - 1`` targets)."""
        if self.target is not None or k == 0:
            return None, [self.target]
        with torch.no_grad():
            clean = model(self.x).detach()
        ranked = clean.scatter(1, self.y[:, None], float("-inf")).topk(min(k, self.num_classes - 1), dim=1).indices
        return clean, list(ranked.T)


@dataclass(frozen=True, eq=False)
class Outcome:
    """What an attack's run returns.

    Attributes:
        x_adv: adversarial inputs inside the threat model.
        queries: int64 (B,) model evaluations spent per sample.
        logits_adv: the model's outputs at ``x_adv`` where the run already computed them (NaN rows elsewhere),
            so that only the other rows are evaluated again (ignored on randomized models, judged afresh).
        logits_clean: the model's outputs at ``x`` when the run computed them all (e.g. FGSM's gradient pass).
    """

    x_adv: Tensor
    queries: Tensor
    logits_adv: Tensor | None = None
    logits_clean: Tensor | None = None


@dataclass(frozen=True, eq=False)
class Crafted:
    """An attack's adversarial inputs before any verdict (:meth:`Attack.craft`).

    Attributes:
        x_adv: the adversarial inputs; ``norms``: their per-sample L0/L2/Linf distances to the inputs.
        queries: int64 (B,) model evaluations the attack spent; ``seconds``: its wall time.
        task: what the attack worked on (inputs, labels, resolved targets, keys, randomness of the model).
        clean: ``(logits, preds)`` of the clean inputs when the attack already has them, else None.
        known_adv: outputs at ``x_adv`` the attack already computed (NaN rows elsewhere), else None.
    """

    x_adv: Tensor
    queries: Tensor
    seconds: float
    task: Task
    norms: dict[str, Tensor]
    clean: tuple[Tensor, Tensor] | None = None
    known_adv: Tensor | None = None


def is_success(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != y


def resolve_target(
    spec: TargetSpec, y: Tensor, keys: Tensor, seed: int, *, num_classes: int, logits_clean: Tensor | None = None,
) -> Tensor | None:
    """Turn a target spec into int64 labels: explicit tensor, ``"random"`` (uniform over wrong classes,
    keyed per sample) or ``"least-likely"`` (the clean model's least likely class, from ``logits_clean``)."""
    if spec is None:
        return None
    k = num_classes
    if isinstance(spec, Tensor):
        check_labels(spec, y.shape[0], num_classes=k, name="target")
        spec = spec.to(y.device)
        same = (spec == y).nonzero().squeeze(1)
        if same.numel():
            first = same[:8].tolist()
            raise LabelError(
                f"target equals the true label for {same.numel()} of {y.shape[0]} inputs (indices {first}"
                f"{' ...' if same.numel() > 8 else ''}): a targeted attack needs another class; drop those inputs "
                "or pick other targets (target='random' always picks a wrong class)")
        return spec
    if spec == "least-likely":
        if logits_clean is None:
            raise ConfigError("'least-likely' targets need the clean logits")
        return logits_clean.argmin(1)
    if spec == "random":
        u = keyed_uniform(keys, (1,), seed=seed, stream=99991).reshape(-1).to(y.device)
        offset = 1 + (u * (k - 1)).long().clamp(max=k - 2)
        return (y + offset) % k
    raise LabelError(f"target must be a tensor of labels, 'random' or 'least-likely'; got {shown(spec)}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (value >= 0 if allow_zero else value > 0) and math.isfinite(value)
    if not ok:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {shown(value)}")


def check_int(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {shown(value)}")


def check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {shown(value)}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {shown(value)}")


def check_flag(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {shown(value)}")


def _declared(default: Any, check: Callable[[str, Any], None], optional: bool = False) -> Any:
    """A dataclass field that :meth:`Attack.__post_init__` checks with ``check(name, value)`` (None passes when
    ``optional``); ``default`` MISSING: a required field."""
    def run(name: str, value: Any) -> None:
        if value is not None or not optional:
            check(name, value)
    return dataclasses.field(default=default, metadata={"check": run})


def whole(default: Any = MISSING, *, minimum: int = 1, optional: bool = False) -> Any:
    """An attack option holding an integer >= ``minimum`` (:func:`check_int`)."""
    return _declared(default, partial(check_int, minimum=minimum), optional)


def positive(default: Any = MISSING, *, allow_zero: bool = False, optional: bool = False) -> Any:
    """An attack option holding a finite number > 0, or >= 0 with ``allow_zero`` (:func:`check_positive`)."""
    return _declared(default, partial(check_positive, allow_zero=allow_zero), optional)


def unit(default: float) -> Any:
    """An attack option holding a number in [0, 1] (:func:`check_unit`)."""
    return _declared(default, check_unit)


def choice(default: str, choices: tuple[str, ...]) -> Any:
    """An attack option holding one of ``choices`` (:func:`check_choice`)."""
    return _declared(default, partial(check_choice, choices=choices))


def flag(default: bool) -> Any:
    """An attack option holding True or False (:func:`check_flag`)."""
    return _declared(default, check_flag)


class Attack(ABC):
    """Base of all attacks: frozen keyword-only dataclasses called as ``attack(model, x, y, ...)``.

    A white-box attack implements :meth:`_run`; :class:`QueryAttack` and transfer attacks override
    :meth:`_execute`, which decides what of the model an attack gets to see.
    """

    name: ClassVar[str]
    access: ClassVar[Access] = "white-box"
    #: options that scale with eps in :meth:`at_eps` (a step size keeps its ratio to the radius)
    scaled_with_eps: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        """Check the options declared with a check (:func:`whole`, :func:`positive`, :func:`unit`, :func:`choice`,
        :func:`flag`), in field order, then :meth:`_check`, then the bounds (by building the threat model)."""
        for f in fields(self):  # type: ignore[arg-type]
            if "check" in f.metadata:
                f.metadata["check"](f.name, getattr(self, f.name))
        self._check()
        _ = self.threat

    def _check(self) -> None:  # noqa: B027 - an optional hook
        """Checks of a subclass's options that no declared check covers."""

    @property
    @abstractmethod
    def threat(self) -> ThreatModel:
        """The threat model results are guaranteed to satisfy."""

    @property
    def radius(self) -> float | None:
        """The attack's budget in its threat model's norm, when it has one that can be swept: its ``eps`` option
        (None without one: a minimum-norm attack, or JSMA, whose budget is a share of features)."""
        eps = getattr(self, "eps", None)
        return None if eps is None else float(eps)

    def at_eps(self, eps: float) -> Self:
        """This attack at radius ``eps``, the options in :attr:`scaled_with_eps` (step sizes) keeping their ratio
        to it; attacks without an ``eps`` option are returned as they are."""
        old = getattr(self, "eps", None)
        if old is None:
            return self
        changes: dict[str, Any] = {"eps": eps}
        for name in self.scaled_with_eps:
            value = getattr(self, name)
            if value is not None and old:
                changes[name] = value * eps / old
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @property
    def cost(self) -> int:
        """About how many gradient or query passes the attack makes per input (for progress estimates)."""
        return 1

    @property
    def label(self) -> str:
        """This configuration's short name in tables: the attack's name, with its norm and its loss when they
        are not the attack's defaults (``pgd``, ``pgd-l2-margin``, ``square``, ``square-ce``)."""
        d = self.to_dict()
        name = str(d["attack"])
        defaults: dict[str, Any] = {f.name: f.default for f in fields(self)} if is_dataclass(self) else {}
        if d.get("norm") not in (None, "linf"):
            name += f"-{d['norm']}"
        if d.get("loss") not in (None, defaults.get("loss", "ce")):
            name += f"-{d['loss']}"
        return name

    @final
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: TargetSpec = None,
        generator: torch.Generator | None = None,
        keys: Tensor | None = None,
        draws: int | None = None,
    ) -> AttackResult:
        """Attack ``model`` on the batch ``(x, y)``.

        Args:
            model: a classifier in eval mode taking inputs in the threat model's bounds, returning logits.
            x: inputs, (N, C, H, W) (or (N, D)), floating, inside the bounds.
            y: true labels, int64 (N,).
            target: None (untargeted), a tensor of target labels, ``"random"`` or ``"least-likely"``.
            generator: source of randomness (one seed is drawn from it); None means seed 0.
            keys: int64 (N,) per-sample randomness keys (default ``arange(N)``). Pass the samples' global
                indices to make results independent of how samples are batched.
            draws: calls of the model that judge the clean and adversarial inputs; default 1 on a deterministic
                model and :data:`~bastion._model.DEFAULT_DRAWS` (8) on a randomized one.

        Returns:
            An :class:`AttackResult`.
        """
        # gradient attacks need autograd even when called under ``torch.no_grad()`` or ``inference_mode()``
        with torch.inference_mode(False), torch.enable_grad(), frozen(model):
            crafted = self._craft(model, x, y, target=target, generator=generator, keys=keys, draws=draws)
            return self._verdict(model, crafted)

    @final
    def craft(self, model: nn.Module, x: Tensor, y: Tensor, *, target: TargetSpec = None,
              generator: torch.Generator | None = None, keys: Tensor | None = None) -> Crafted:
        """The attack without its verdict: the adversarial inputs and what they cost, for a caller that judges
        them itself (the evaluator judges every image once, on the model it evaluates, over its own draws).
        Same arguments, checks and randomness as :meth:`__call__`."""
        with torch.inference_mode(False), torch.enable_grad(), frozen(model):
            return self._craft(model, x, y, target=target, generator=generator, keys=keys, draws=None)

    def _craft(self, model: nn.Module, x: Tensor, y: Tensor, *, target: TargetSpec, generator: torch.Generator | None,
               keys: Tensor | None, draws: int | None) -> Crafted:
        threat = self.threat
        check_images(x, bounds=threat.bounds)
        check_eval_mode(model)
        # tensors made under inference_mode cannot enter autograd: normal copies can
        x, y = _normal_tensor(x), _normal_tensor(y)
        target = _normal_tensor(target) if isinstance(target, Tensor) else target
        if keys is None:
            keys = torch.arange(x.shape[0], device=x.device)
        elif not isinstance(keys, Tensor) or keys.dtype != torch.int64 or keys.shape != (x.shape[0],):
            got = f"{keys.dtype} {tuple(keys.shape)}" if isinstance(keys, Tensor) else type(keys).__name__
            raise LabelError(f"keys must be an int64 tensor of shape ({x.shape[0]},), got {got}")
        keys = _normal_tensor(keys)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                              f"got {type(generator).__name__}")
        if draws is not None and (not isinstance(draws, int) or isinstance(draws, bool) or draws < 1):
            raise ConfigError(f"draws must be an integer >= 1 or None, got {shown(draws)}")
        seed = seed_from(generator)
        x = x.detach()
        num_classes, randomized = probe_model(model, x)
        check_labels(y, x.shape[0], num_classes=num_classes)
        n_draws = draws if draws is not None else (DEFAULT_DRAWS if randomized else 1)
        clean: tuple[Tensor, Tensor] | None = None
        if isinstance(target, str) and target == "least-likely":
            clean = judge(model, x, draws=n_draws)
        tgt = resolve_target(target, y, keys, seed, num_classes=num_classes,
                             logits_clean=None if clean is None else clean[0])
        task = Task(x=x, y=y, target=tgt, keys=keys, seed=seed, num_classes=num_classes, randomized=randomized,
                    may_stop_early=not randomized, draws=n_draws)
        t0 = time.perf_counter()
        out = self._execute(model, task)
        seconds = time.perf_counter() - t0
        x_adv = out.x_adv.detach()
        if not bool(threat.contains(x_adv, x).all()):  # an internal invariant; never expected to fire
            raise RuntimeError(f"{type(self).__name__} produced points outside its threat model {threat}")
        if clean is None and out.logits_clean is not None and n_draws == 1 and not randomized:
            clean = (out.logits_clean.detach(), out.logits_clean.argmax(1)[None])
        known = out.logits_adv if (n_draws == 1 and not randomized) else None
        return Crafted(x_adv=x_adv, queries=out.queries.to(torch.int64), seconds=seconds, task=task,
                       norms=perturbation_norms(x_adv, x), clean=clean, known_adv=known)

    def _verdict(self, model: nn.Module, c: Crafted) -> AttackResult:
        """Judge crafted points (and the clean inputs) over the task's draws."""
        task = c.task
        clean = c.clean if c.clean is not None else judge(model, task.x, draws=task.draws)
        logits_adv, preds_adv = judge(model, c.x_adv, draws=task.draws, known=c.known_adv)
        return AttackResult(
            x_adv=c.x_adv,
            success=is_success(logits_adv, task.y, task.target),
            logits_adv=logits_adv.detach(),
            logits_clean=clean[0].detach(),
            norms=c.norms,
            queries=c.queries,
            seconds=c.seconds,
            y=task.y,
            target=task.target,
            preds_adv=preds_adv,
            preds_clean=clean[1],
        )

    def _execute(self, model: nn.Module, task: Task) -> Outcome:
        """Run the attack on a prepared task. White-box attacks see the model (this default calls
        :meth:`_run`); query and transfer attacks override this to see less."""
        return self._run(model, task)

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        """A white-box attack's work: return adversarial inputs inside the threat model and per-sample queries."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _run nor _execute")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (for reports and the CLI)."""
        d: dict[str, Any] = {"attack": self.name}
        if is_dataclass(self):
            d.update({f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.repr})
        return d


def probe_model(model: nn.Module, x: Tensor) -> tuple[int, bool]:
    """(number of classes, randomized) from a checked call of the model on the first few inputs (and, when the
    model declares nothing about its randomness, a second call to compare)."""
    first = checked_forward(model, x[:PROBE_SAMPLES])
    randomized = declared_randomized(model)
    return int(first.shape[1]), probe_randomized(model, x, first) if randomized is None else randomized


class MinimumNormAttack(Attack):
    """Base of the minimum-norm attacks (CW, DeepFool, FMN, minimum-norm PGD, HopSkipJump): each looks for the
    smallest perturbation, in one norm, that fools the model, so its threat model is unbounded in distance
    (``eps = inf``) and it has no radius to sweep. One run gives every image's smallest adversarial perturbation
    found, and so a whole accuracy-vs-eps curve: :class:`~bastion.eval.Evaluation` counts an image as broken
    at ``eps`` when the attack succeeded with a perturbation of norm at most ``eps``."""

    bounds: tuple[float, float]

    @property
    def minimized_norm(self) -> str:
        """The norm the attack minimises: ``"l2"``, ``"linf"``, ``"l1"`` or ``"l0"`` (a subclass's ``norm``
        option; an attack made for one norm overrides this)."""
        return str(self.norm)  # type: ignore[attr-defined]

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm=self.minimized_norm, eps=float("inf"), bounds=self.bounds)  # type: ignore[arg-type]


class WrappingAttack(Attack):
    """Base of the attacks that run another attack (``attack``, a dataclass field of the subclass) in another
    setting: through another view of the model (:class:`~bastion.attacks.Adaptive`) or on a source model
    (:class:`~bastion.attacks.TransferAttack`). The threat model, the radius and ``at_eps`` are the inner
    attack's."""

    attack: Attack

    @property
    def threat(self) -> ThreatModel:
        return self.attack.threat

    @property
    def radius(self) -> float | None:
        return self.attack.radius

    def at_eps(self, eps: float) -> Self:
        return replace(self, attack=self.attack.at_eps(eps))  # type: ignore[type-var]


@dataclass(frozen=True, kw_only=True)
class BallAttack(Attack):
    """Base of the white-box attacks inside a norm ball (FGSM, BIM, PGD, APGD, FAB): the radius ``eps``, the
    norm and the bounds, validated once.

    Args:
        eps: perturbation budget in the chosen norm.
        norm: ``"linf"`` or ``"l2"``.
        bounds: the valid input range.
    """

    eps: float = positive(allow_zero=True)
    norm: Literal["linf", "l2"] = choice("linf", ("linf", "l2"))
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)


@dataclass(frozen=True, kw_only=True)
class GradientAttack(BallAttack):
    """Base of the attacks that climb a loss inside a norm ball (FGSM, BIM, PGD, APGD): :class:`BallAttack`'s
    options and the loss.

    Args:
        loss: ``"ce"`` (cross-entropy), ``"margin"`` (Carlini-Wagner) or ``"dlr"`` (Difference of Logits Ratio,
            Croce & Hein 2020; see :func:`bastion.attacks.losses.dlr_loss`).
    """

    loss: str = choice("ce", LOSSES)


class QueryAttack(Attack):
    """Base of the black-box attacks: their run gets a query-counting :class:`~bastion.attacks.oracle.Oracle`
    of the model (probabilities for ``output="scores"``, labels for ``"labels"``), built here, never the model
    itself and never the clean outputs. Subclasses implement :meth:`_query`."""

    access: ClassVar[Access] = "score"
    #: what the oracle returns
    output: ClassVar[OracleOutput] = "scores"

    @property
    def per_sample_budget(self) -> int | None:
        """The oracle's per-sample query budget: the attack's ``max_queries`` option (None: unlimited)."""
        return getattr(self, "max_queries", None)

    @final
    def _execute(self, model: nn.Module, task: Task) -> Outcome:
        oracle = Oracle(model, self.output, n=task.n, budget=self.per_sample_budget, on_exceed="raise")
        return self._query(oracle, task)

    @abstractmethod
    def _query(self, oracle: Oracle, task: Task) -> Outcome:
        """The attack, on the oracle (sample ``i`` of the task is oracle index ``i``)."""


def _normal_tensor(t: Tensor) -> Tensor:
    """``t``, or a normal copy of it when it was made under ``inference_mode`` (such tensors cannot enter autograd)."""
    return t.clone() if isinstance(t, Tensor) and t.is_inference() else t


def _plain(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)
