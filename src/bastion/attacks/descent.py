"""The one projected steepest-ascent loop of bastion.

FGSM, BIM, PGD, the minimum-norm PGD's inner searches and the crafting of adversarial training (FGSM-RS, PGD,
TRADES) all walk with :class:`Descent`: ``steps`` steps of ``step_size`` along the threat model's steepest
direction of a per-sample loss, each projected onto the ball and into the bounds. What differs between them is
passed in: the loss (any callable of the model's outputs), an optional success test (for early stopping and
for keeping the best point), a random start, and radii and step sizes that may differ per sample.

Example (PGD-10 on the cross-entropy, by hand)::

    d = Descent(ThreatModel(eps=0.3), steps=10, step_size=0.03, random_start=True)
    out = d.run(model, x, named_loss("ce", y), keys=torch.arange(len(x)), seed=0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion._model import evaluations_per_input, forward_in_chunks, grad_in_chunks
from bastion.attacks.losses import attack_loss
from bastion.threat import ThreatModel, per_sample

#: ``loss(logits, idx)``: per-row loss to maximise, for the rows of the samples ``idx`` (None: every sample)
LossFn = Callable[[Tensor, Tensor | None], Tensor]
#: ``success(logits, idx)``: per-row bool, the attack's goal is met
SuccessFn = Callable[[Tensor, Tensor | None], Tensor]


def named_loss(name: str, y: Tensor, target: Tensor | None = None) -> LossFn:
    """One of :data:`bastion.attacks.losses.LOSSES` (``"ce"``, ``"margin"``, ``"dlr"``) towards ``target`` or away from ``y``."""
    def loss(logits: Tensor, idx: Tensor | None) -> Tensor:
        if idx is None:
            return attack_loss(name, logits, y, target)
        return attack_loss(name, logits, y[idx], None if target is None else target[idx])
    return loss


def misclassified(y: Tensor, target: Tensor | None = None) -> SuccessFn:
    """Success: classified as ``target`` (targeted), else anything but ``y``."""
    def success(logits: Tensor, idx: Tensor | None) -> Tensor:
        pred = logits.argmax(1)
        if target is not None:
            return pred == (target if idx is None else target[idx])
        return pred != (y if idx is None else y[idx])
    return success


def value_and_grad(model: nn.Module, x: Tensor, loss: LossFn, idx: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, per-sample loss, d loss / d x)`` at ``x`` (gradients with respect to the input only; zero
    where the model's output does not depend on ``x`` differentiably: masked gradients).

    The forward and backward passes run on chunks of the batch (:func:`bastion._model.grad_in_chunks`), so
    that memory stays bounded for any batch of large inputs; the result equals the whole batch's."""
    def chunk(xs: Tensor, rows: slice) -> tuple[Tensor, Tensor]:
        logits = model(xs)
        if xs.shape[0] == x.shape[0]:  # the whole batch
            return logits, loss(logits, idx)
        sel = torch.arange(x.shape[0], device=x.device)[rows] if idx is None else idx[rows]
        return logits, loss(logits, sel)

    return grad_in_chunks(chunk, x, per_sample=evaluations_per_input(model))


@dataclass(frozen=True)
class DescentResult:
    """What one :meth:`Descent.run` returns, per sample.

    Attributes:
        x_adv: the result: the best point visited with ``keep_best``, else the last iterate (or the point where
            the sample stopped early).
        success: bool: the result met the success test (False where it was not evaluated).
        loss: the loss at the result (NaN where it was not evaluated).
        queries: int64: model evaluations spent.
        logits: the model's outputs at the result where evaluated (NaN rows elsewhere).
        start_logits: the model's outputs at ``x`` for every sample, when the walk started there (no random
            start, at least one step): the first step's forward pass is a clean forward pass.
    """

    x_adv: Tensor
    success: Tensor
    loss: Tensor
    queries: Tensor
    logits: Tensor
    start_logits: Tensor | None = None


@dataclass(frozen=True)
class Descent:
    """How to walk: ``steps`` steps of ``step_size`` along the threat's steepest direction, projected.

    Attributes:
        threat: the norm ball (its ``eps`` unless :meth:`run` gets per-sample radii) and the bounds.
        steps: iterations.
        step_size: a number, or a (B,) tensor of per-sample step sizes.
        random_start: start from a random point of the ball (keyed per sample).
        keep_best: return, per sample, the best point visited instead of the last iterate: a successful point
            (the first one when ``early_stop``, else the highest-loss one), else the highest-loss point. Needs a
            success test; the last iterate is then evaluated once more.
        early_stop: stop moving a sample once it is successful (its point is then frozen). Needs a success test.
    """

    threat: ThreatModel
    steps: int
    step_size: float | Tensor
    random_start: bool = False
    keep_best: bool = False
    early_stop: bool = False

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        loss: LossFn,
        *,
        success: SuccessFn | None = None,
        keys: Tensor,
        seed: int,
        stream: int = 0,
        eps: Tensor | None = None,
    ) -> DescentResult:
        """Walk from ``x`` (or a random point of its ball) for ``steps`` steps.

        With ``keep_best=False`` the samples still moving at the end return their last iterate unevaluated
        (success False, loss NaN: the caller evaluates the result, as the attack base class does); success
        and loss are then only those of samples stopped early.
        """
        if (self.keep_best or self.early_stop) and success is None:
            raise ValueError("keep_best and early_stop need a success test")
        b = x.shape[0]
        dev = x.device
        x_adv = self.threat.random_init(x, keys, seed=seed, stream=stream, eps=eps) if self.random_start else x.clone()
        best_x = x_adv.clone()
        best_loss = torch.full((b,), float("-inf"), device=dev)
        best_ok = torch.zeros(b, dtype=torch.bool, device=dev)
        best_logits: Tensor | None = None
        start_logits: Tensor | None = None
        queries = torch.zeros(b, dtype=torch.int64, device=dev)
        active = torch.arange(b, device=dev)
        step = self.step_size

        def record(idx: Tensor, whole: bool, xs: Tensor, logits: Tensor, values: Tensor) -> Tensor:
            nonlocal best_logits
            if best_logits is None:
                best_logits = torch.full((b, logits.shape[1]), float("nan"), dtype=logits.dtype, device=dev)
            ok = success(logits, None if whole else idx) if success is not None else torch.zeros_like(values, dtype=torch.bool)
            if self.keep_best:
                better = (ok & ~best_ok[idx]) | ((ok == best_ok[idx]) & (values > best_loss[idx]))
            else:
                better = torch.ones_like(ok)
            sel = idx[better]
            best_x[sel] = xs[better]
            best_loss[sel] = values[better].to(best_loss.dtype)
            best_ok[sel] = ok[better]
            best_logits[sel] = logits[better].to(best_logits.dtype)
            return ok

        for i in range(self.steps):
            whole = active.numel() == b  # every sample still moves: skip the gathers and scatters
            xa = x_adv if whole else x_adv[active]
            logits, values, grad = value_and_grad(model, xa, loss, None if whole else active)
            if i == 0 and not self.random_start:
                start_logits = logits
            queries[active] += 1
            with torch.no_grad():
                ok = record(active, whole, xa, logits, values)
                if self.early_stop and bool(ok.any()):
                    keep = ~ok
                    active, xa, grad = active[keep], xa[keep], grad[keep]
                    whole = False
                    if active.numel() == 0:
                        break
                alpha = step if not isinstance(step, Tensor) else per_sample(step[active].to(x.dtype), xa)
                e = None if eps is None else eps[active]
                moved = self.threat.project(xa + alpha * self.threat.steepest(grad), x if whole else x[active], eps=e)
                if whole:
                    x_adv = moved
                else:
                    x_adv[active] = moved
        if best_logits is None:  # no step taken
            best_logits = torch.full((b, 1), float("nan"), device=dev)
        if active.numel() and not self.keep_best:  # the last iterate is the result: the caller evaluates it
            best_x[active] = x_adv[active]
            best_ok[active] = False
            best_loss[active] = float("nan")
            best_logits[active] = float("nan")
        elif active.numel():
            with torch.no_grad():
                whole = active.numel() == b
                xa = x_adv if whole else x_adv[active]
                logits = forward_in_chunks(model, xa)
                values = loss(logits, None if whole else active)
                queries[active] += 1
                record(active, whole, xa, logits, values)
        return DescentResult(best_x, best_ok, best_loss, queries, best_logits, start_logits)
