"""The attack contract: configuration objects called with a model and a batch.

Every attack is an immutable, keyword-only, validated configuration. The model and the data come with
each call, targeting is a per-call argument, and randomness comes only from an explicit
``torch.Generator`` (see :mod:`bastion._rng`).

Calling an attack never changes the caller's tensors, the model's mode, or its parameters'
``requires_grad`` flags, and leaves no ``.grad`` on parameters. A model in training mode is refused with a
:class:`~bastion.errors.ModelModeError` (call ``model.eval()``); bastion never silently switches modes.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, ClassVar, Literal, final

import torch
from torch import Tensor, nn

from bastion._checks import check_eval_mode, check_images, check_labels, frozen
from bastion._rng import keyed_uniform, seed_from
from bastion.errors import ConfigError, InputShapeError, LabelError
from bastion.threat import ThreatModel, perturbation_norms

TargetSpec = Tensor | Literal["random", "least-likely"] | None


@dataclass(frozen=True, eq=False)
class AttackResult:
    """What an attack returns for a batch of B inputs.

    Attributes:
        x_adv: adversarial inputs, same shape, dtype and device as ``x``.
        success: bool (B,): misclassified (untargeted) or classified as the target (targeted).
        logits_adv: model outputs at ``x_adv`` (B, K).
        logits_clean: model outputs at ``x`` (B, K).
        norms: per-sample ``"l0"``, ``"l2"``, ``"linf"`` of ``x_adv - x`` (float64, (B,)).
        queries: int64 (B,), model evaluations the attack itself spent on each sample (bastion's own
            clean and final evaluations are not counted).
        seconds: wall time of the attack.
        y: true labels; ``target``: target labels or None.
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

    @property
    def pred_adv(self) -> Tensor:
        return self.logits_adv.argmax(1)

    @property
    def pred_clean(self) -> Tensor:
        return self.logits_clean.argmax(1)

    @property
    def robust(self) -> Tensor:
        """bool (B,): still classified correctly after the attack."""
        return self.pred_adv == self.y

    def summary(self) -> dict[str, float | None]:
        """Batch averages: clean/robust accuracy, success rate, mean norms (``mean_<norm>`` over every input,
        ``mean_<norm>_success`` over the successful ones, None when there are none), seconds, mean queries."""
        ok = self.success.to(self.norms["l0"].device)
        return {
            "n": int(self.y.shape[0]),
            "clean_accuracy": float((self.pred_clean == self.y).float().mean()),
            "robust_accuracy": float(self.robust.float().mean()),
            "success_rate": float(self.success.float().mean()),
            **{f"mean_{k}": float(v.mean()) for k, v in self.norms.items()},
            **{f"mean_{k}_success": float(v[ok].mean()) if bool(ok.any()) else None for k, v in self.norms.items()},
            "seconds": self.seconds,
            "mean_queries": float(self.queries.float().mean()),
        }


def is_success(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != y


def resolve_target(
    spec: TargetSpec, logits_clean: Tensor, y: Tensor, keys: Tensor, seed: int
) -> Tensor | None:
    """Turn a target spec into int64 labels: explicit tensor, ``"random"`` (uniform over wrong classes,
    keyed per sample) or ``"least-likely"`` (the clean model's least likely class)."""
    if spec is None:
        return None
    k = logits_clean.shape[1]
    if isinstance(spec, Tensor):
        check_labels(spec, y.shape[0], num_classes=k, name="target")
        spec = spec.to(y.device)
        same = (spec == y).nonzero().squeeze(1)
        if same.numel():
            shown = same[:8].tolist()
            raise LabelError(
                f"target equals the true label for {same.numel()} of {y.shape[0]} inputs (indices {shown}"
                f"{' ...' if same.numel() > 8 else ''}): a targeted attack needs another class; drop those inputs "
                "or pick other targets (target='random' always picks a wrong class)")
        return spec
    if spec == "least-likely":
        return logits_clean.argmin(1)
    if spec == "random":
        u = keyed_uniform(keys, (1,), seed=seed, stream=99991).reshape(-1).to(y.device)
        offset = 1 + (u * (k - 1)).long().clamp(max=k - 2)
        return (y + offset) % k
    raise LabelError(f"target must be a tensor of labels, 'random' or 'least-likely'; got {spec!r}")


class Attack(ABC):
    """Base of all attacks. Subclasses are frozen keyword-only dataclasses and implement :meth:`_run`."""

    name: ClassVar[str]
    #: "white-box" (needs gradients), "score" (needs scores), "label" (needs only labels), "transfer"
    access: ClassVar[str] = "white-box"

    @property
    @abstractmethod
    def threat(self) -> ThreatModel:
        """The threat model results are guaranteed to satisfy."""

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

        Returns:
            An :class:`AttackResult`.
        """
        # gradient attacks need autograd even when called under ``torch.no_grad()`` or ``inference_mode()``
        with torch.inference_mode(False), torch.enable_grad():
            return self._call(model, x, y, target=target, generator=generator, keys=keys)

    def _call(self, model: nn.Module, x: Tensor, y: Tensor, *, target: TargetSpec, generator: torch.Generator | None,
              keys: Tensor | None) -> AttackResult:
        threat = self.threat
        check_images(x, bounds=threat.bounds)
        check_eval_mode(model)
        # tensors made under inference_mode cannot enter autograd: normal copies can
        x, y = _normal_tensor(x), _normal_tensor(y)
        if isinstance(target, Tensor):
            target = _normal_tensor(target)
        if keys is None:
            keys = torch.arange(x.shape[0], device=x.device)
        elif not isinstance(keys, Tensor) or keys.dtype != torch.int64 or keys.shape != (x.shape[0],):
            got = f"{keys.dtype} {tuple(keys.shape)}" if isinstance(keys, Tensor) else type(keys).__name__
            raise LabelError(f"keys must be an int64 tensor of shape ({x.shape[0]},), got {got}")
        keys = _normal_tensor(keys)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                              f"got {type(generator).__name__}")
        seed = seed_from(generator)
        x = x.detach()
        with frozen(model):
            logits_clean = clean_forward(model, x)
            if logits_clean.ndim != 2:
                raise LabelError(f"the model returned shape {tuple(logits_clean.shape)}; expected (N, classes) logits")
            check_labels(y, x.shape[0], num_classes=logits_clean.shape[1])
            tgt = resolve_target(target, logits_clean, y, keys, seed)
            t0 = time.perf_counter()
            out = self._run(model, x, y, tgt, seed=seed, keys=keys, logits_clean=logits_clean)
            seconds = time.perf_counter() - t0
            x_adv, queries = out[0].detach(), out[1]
            logits_adv = _final_logits(model, x_adv, out[2] if len(out) > 2 else None)
        inside = threat.contains(x_adv, x)
        if not bool(inside.all()):  # an internal invariant; never expected to fire
            raise RuntimeError(f"{type(self).__name__} produced points outside its threat model {threat}")
        return AttackResult(
            x_adv=x_adv,
            success=is_success(logits_adv, y, tgt),
            logits_adv=logits_adv.detach(),
            logits_clean=logits_clean.detach(),
            norms=perturbation_norms(x_adv, x),
            queries=queries.to(torch.int64),
            seconds=seconds,
            y=y,
            target=tgt,
        )

    @abstractmethod
    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, seed: int, keys: Tensor,
        logits_clean: Tensor,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Return ``(x_adv, queries)``: adversarial inputs inside the threat model and per-sample query counts;
        optionally a third element, the model's outputs at ``x_adv`` where the attack already computed them
        (NaN rows elsewhere), so that only the other rows are evaluated again."""

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (for reports and the CLI)."""
        d: dict[str, Any] = {"attack": self.name}
        if is_dataclass(self):
            d.update({f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.repr})
        return d


def _normal_tensor(t: Tensor) -> Tensor:
    """``t``, or a normal copy of it when it was made under ``inference_mode`` (such tensors cannot enter autograd)."""
    return t.clone() if isinstance(t, Tensor) and t.is_inference() else t


def clean_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` without gradients; a model that cannot take ``x`` (wrong shape, channels or dtype) or does
    not return a tensor gets a clear :class:`InputShapeError` instead of an error from deep inside torch."""
    try:
        with torch.no_grad():
            out = forward_in_chunks(model, x)
    except RuntimeError as e:
        if isinstance(e, torch.OutOfMemoryError) or "memory" in str(e).lower():
            raise
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if len(dtypes) == 1 and x.dtype not in dtypes:
            (want,) = dtypes
            raise InputShapeError(f"x has dtype {x.dtype} but the model's parameters are {want}: pass x.to({want}) "
                                  "(or convert the model)") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputShapeError(f"the model cannot take x of shape {tuple(x.shape)} ({x.dtype}): {first}") from e
    if not isinstance(out, Tensor):
        raise InputShapeError(f"the model returned a {type(out).__name__}; bastion needs a model that returns a "
                              "tensor of logits (wrap it to return only the logits)")
    return out


def _final_logits(model: nn.Module, x_adv: Tensor, known: Tensor | None) -> Tensor:
    """The model's outputs at ``x_adv``: ``known`` rows as given, the rest (all when None, NaN rows) computed."""
    if known is None:
        with torch.no_grad():
            return forward_in_chunks(model, x_adv)
    out = known.detach().clone()
    missing = torch.isnan(out).any(1).nonzero().squeeze(1)
    if missing.numel():
        with torch.no_grad():
            out[missing] = forward_in_chunks(model, x_adv[missing]).to(out.dtype)
    return out


#: input features per chunk of a forward pass on CPU: a chunk's activations then stay in cache (bastion's
#: ``mnist-cnn`` evaluates 900 images about 1.5x faster in chunks of 83 than in one batch)
_CPU_CHUNK_FEATURES = 1 << 16


def forward_in_chunks(model: nn.Module, x: Tensor) -> Any:  # the model's output, checked by callers
    """``model(x)``, on CPU in chunks of about ``_CPU_CHUNK_FEATURES`` input features (concatenated); the first
    chunk's output is returned as is when it is not a tensor (for the caller's check)."""
    if x.device.type != "cpu" or x.ndim == 0 or x.shape[0] == 0:
        return model(x)
    chunk = max(1, _CPU_CHUNK_FEATURES // max(1, x[0].numel()))
    if x.shape[0] <= chunk:
        return model(x)
    first = model(x[:chunk])
    if not isinstance(first, Tensor):
        return first
    return torch.cat([first] + [model(x[i : i + chunk]) for i in range(chunk, x.shape[0], chunk)])


def _plain(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (value >= 0 if allow_zero else value > 0) and math.isfinite(value)
    if not ok:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_int(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
