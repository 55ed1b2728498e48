"""The one projected steepest-ascent loop behind FGSM, BIM and PGD."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.attacks.base import is_success
from bastion.attacks.losses import attack_loss, loss_and_grad
from bastion.threat import ThreatModel


@dataclass(frozen=True)
class Descent:
    """How to walk: ``steps`` steps of size ``step_size`` along the threat's steepest direction, projected.

    Attributes:
        keep_best: return, per sample, the best point visited instead of the last iterate: a successful point
            (the first one when ``early_stop``, else the highest-loss one), else the highest-loss point.
        early_stop: stop moving a sample once it is successful (its point is then frozen).
    """

    threat: ThreatModel
    steps: int
    step_size: float
    loss: str
    random_start: bool
    keep_best: bool
    early_stop: bool

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, keys: Tensor, seed: int, stream: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns ``(x_adv, success, loss, queries)`` for one start.

        With ``keep_best=False`` the samples still moving at the end return their last iterate unevaluated
        (success False, loss NaN: the caller evaluates the result, as the attack base class does); success
        and loss are then only those of samples stopped early."""
        b = x.shape[0]
        dev = x.device
        x_adv = self.threat.random_init(x, keys, seed=seed, stream=stream) if self.random_start else x.clone()
        best_x = x_adv.clone()
        best_loss = torch.full((b,), float("-inf"), device=dev)
        best_ok = torch.zeros(b, dtype=torch.bool, device=dev)
        queries = torch.zeros(b, dtype=torch.int64, device=dev)
        active = torch.arange(b, device=dev)

        def record(idx: Tensor, xs: Tensor, logits: Tensor, values: Tensor) -> Tensor:
            ok = is_success(logits, y[idx], None if target is None else target[idx])
            if self.keep_best:
                better = (ok & ~best_ok[idx]) | ((ok == best_ok[idx]) & (values > best_loss[idx]))
            else:
                better = torch.ones_like(ok)
            sel = idx[better]
            best_x[sel] = xs[better]
            best_loss[sel] = values[better].to(best_loss.dtype)
            best_ok[sel] = ok[better]
            return ok

        for _ in range(self.steps):
            whole = active.numel() == b  # every sample still moves: skip the gathers and scatters
            xa = x_adv if whole else x_adv[active]
            t = None if target is None else (target if whole else target[active])
            logits, values, grad = loss_and_grad(model, xa, y if whole else y[active], t, self.loss)
            queries[active] += 1
            with torch.no_grad():
                ok = record(active, xa, logits, values)
                if self.early_stop and bool(ok.any()):
                    keep = ~ok
                    active, xa, grad = active[keep], xa[keep], grad[keep]
                    if active.numel() == 0:
                        break
                if active.numel() == b:
                    x_adv = self.threat.project(xa + self.step_size * self.threat.steepest(grad), x)
                else:
                    x_adv[active] = self.threat.project(xa + self.step_size * self.threat.steepest(grad), x[active])
        if active.numel() and not self.keep_best:  # the last iterate is the result: the caller evaluates it
            best_x[active] = x_adv[active]
            best_ok[active] = False
            best_loss[active] = float("nan")
        elif active.numel():
            with torch.no_grad():
                xa = x_adv[active]
                t = None if target is None else target[active]
                logits = model(xa)
                values = attack_loss(self.loss, logits, y[active], t)
                queries[active] += 1
                record(active, xa, logits, values)
        return best_x, best_ok, best_loss, queries


def run_restarts(
    descent: Descent,
    restarts: int,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    *,
    keys: Tensor,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Run ``restarts`` random starts; later starts only on samples not yet successful. Keeps the best."""
    x_best, ok_best, loss_best, queries = descent.run(model, x, y, target, keys=keys, seed=seed, stream=0)
    for r in range(1, restarts):
        idx = (~ok_best).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t = None if target is None else target[idx]
        xr, okr, lr, qr = descent.run(model, x[idx], y[idx], t, keys=keys[idx], seed=seed, stream=r)
        better = (okr & ~ok_best[idx]) | ((okr == ok_best[idx]) & (lr > loss_best[idx]))
        sel = idx[better]
        x_best[sel], ok_best[sel], loss_best[sel] = xr[better], okr[better], lr[better]
        queries[idx] += qr
    return x_best, queries
