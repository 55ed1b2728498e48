"""BIM, the basic iterative method / iterative FGSM (Kurakin, Goodfellow & Bengio 2017,
https://arxiv.org/abs/1607.02533).

``T`` FGSM steps of size ``alpha`` (default ``eps / T``), each followed by clipping into the eps-ball and
the valid range. It starts at ``x`` (no random start) and returns the last iterate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from bastion.attacks.base import GradientAttack, Outcome, Task, positive, whole
from bastion.attacks.descent import Descent, misclassified, named_loss


@dataclass(frozen=True, kw_only=True)
class BIM(GradientAttack):
    """Iterative FGSM.

    Args:
        eps: perturbation budget.
        steps: number of iterations ``T``.
        step_size: ``alpha``; default ``eps / steps``.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"margin"``.
        early_stop: freeze a sample once it succeeds (default False: the textbook T steps). Never on a
            randomized model, where a success under one random draw is often undone by the next.
        bounds: the valid input range.
    """

    name: ClassVar[str] = "bim"
    scaled_with_eps: ClassVar[tuple[str, ...]] = ("step_size",)
    steps: int = whole(10)
    step_size: float | None = positive(None, optional=True)
    early_stop: bool = False

    @property
    def cost(self) -> int:
        return self.steps

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / self.steps

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        stop = self.early_stop and task.may_stop_early
        d = Descent(self.threat, steps=self.steps, step_size=self.alpha, early_stop=stop)
        out = d.run(model, task.x, named_loss(self.loss, task.y, task.target),
                    success=misclassified(task.y, task.target) if stop else None, keys=task.keys, seed=task.seed)
        return Outcome(out.x_adv, out.queries, logits_adv=out.logits, logits_clean=out.start_logits)
