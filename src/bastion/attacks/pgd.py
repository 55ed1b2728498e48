"""PGD, projected gradient descent with random start (Madry et al. 2018, https://arxiv.org/abs/1706.06083).

From a uniform random point of the eps-ball, ``steps`` steepest-ascent steps, each projected onto the ball
and the valid range. Restarts run only on samples not yet successful; each sample keeps its best point
(a successful point, the first one with early_stop, else the highest loss). Losses: cross-entropy or the
Carlini-Wagner margin.

On a randomized model (a BaRT barrage, noise injection) PGD runs every step and returns the last iterate:
a success or a high loss seen under one random draw says little about the next. Restarts are then compared
by the mean-probability verdict over the task's judging draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from bastion._model import judge
from bastion.attacks.base import GradientAttack, Outcome, Task, positive, whole
from bastion.attacks.descent import Descent, DescentResult, misclassified, named_loss


@dataclass(frozen=True, kw_only=True)
class PGD(GradientAttack):
    """Projected gradient descent.

    Args:
        eps: perturbation budget.
        steps: iterations per start.
        step_size: step length; default ``2.5 * eps / steps`` (Madry et al.).
        random_start: start from a random point of the ball (default True).
        restarts: number of starts (restarts run only on still-unbroken samples).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"margin"``.
        early_stop: freeze a sample at its first success (default True). On a deterministic model it never
            changes robust accuracy and saves time. It is never used where it would be unsound: on a randomized
            model (bastion detects one, see :mod:`bastion._model`: a success under one random draw is often undone
            by the next) and when crafting for another model (transfer attacks).
        bounds: the valid input range.

    Example:
        >>> atk = PGD(eps=0.3, steps=40, step_size=0.01)           # doctest: +SKIP
        >>> res = atk(model, x, y)                                  # doctest: +SKIP
        >>> res = atk(model, x, y, target="least-likely")           # doctest: +SKIP
    """

    name: ClassVar[str] = "pgd"
    scaled_with_eps: ClassVar[tuple[str, ...]] = ("step_size",)
    steps: int = whole(40)
    step_size: float | None = positive(None, optional=True)
    random_start: bool = True
    restarts: int = whole(1)
    early_stop: bool = True

    @property
    def cost(self) -> int:
        return self.steps * self.restarts

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        d = Descent(self.threat, steps=self.steps, step_size=self.alpha, random_start=self.random_start,
                    keep_best=not task.randomized, early_stop=self.early_stop and task.may_stop_early)
        x_best, ok_best, loss_best, queries, logits = self._start(d, model, task, 0)
        for r in range(1, self.restarts):
            idx = (~ok_best).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xr, okr, lr, qr, logr = self._start(d, model, task.subset(idx), r)
            better = (okr & ~ok_best[idx]) | ((okr == ok_best[idx]) & (lr > loss_best[idx]))
            sel = idx[better]
            x_best[sel], ok_best[sel], loss_best[sel], logits[sel] = xr[better], okr[better], lr[better], logr[better]
            queries[idx] += qr
        return Outcome(x_best, queries, logits_adv=None if task.randomized else logits)

    def _start(self, d: Descent, model: nn.Module, task: Task, stream: int) -> tuple[Tensor, ...]:
        """One start: (points, success, loss, queries, outputs at the points)."""
        loss = named_loss(self.loss, task.y, task.target)
        out: DescentResult = d.run(model, task.x, loss, success=misclassified(task.y, task.target) if d.keep_best else None,
                                   keys=task.keys, seed=task.seed, stream=stream)
        if self.restarts == 1 or d.keep_best:
            return out.x_adv, out.success, out.loss, out.queries, out.logits
        # the last iterates are unevaluated: judge them (over draws on a randomized model) to compare starts
        logits, _ = judge(model, out.x_adv, draws=task.draws)
        with torch.no_grad():
            values = loss(logits, None)
        return out.x_adv, task.success(logits), values, out.queries + task.draws, logits
