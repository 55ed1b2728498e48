"""FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, https://arxiv.org/abs/1412.6572).

Untargeted: ``x_adv = clip(x + eps * sign(grad_x J(x, y)))``. Targeted:
``x_adv = clip(x - eps * sign(grad_x J(x, y_target)))``. With ``norm="l2"`` the step is
``eps * grad / ||grad||_2`` (the fast gradient method).

The forward pass of the gradient step is the clean forward pass, so FGSM costs one forward and backward pass
and the forward pass that judges the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from bastion.attacks.base import GradientAttack, Outcome, Task
from bastion.attacks.descent import Descent, named_loss


@dataclass(frozen=True, kw_only=True)
class FGSM(GradientAttack):
    """One step of size ``eps`` along the sign of the loss gradient.

    Args:
        eps: perturbation budget in the chosen norm.
        norm: ``"linf"`` (sign step) or ``"l2"``.
        loss: ``"ce"`` (the paper's) or ``"margin"``.
        bounds: the valid input range.

    Example:
        >>> res = FGSM(eps=0.1)(model, x, y)            # doctest: +SKIP
        >>> res.success.float().mean()                  # doctest: +SKIP
    """

    name: ClassVar[str] = "fgsm"

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        d = Descent(self.threat, steps=1, step_size=self.eps)
        out = d.run(model, task.x, named_loss(self.loss, task.y, task.target), keys=task.keys, seed=task.seed)
        return Outcome(out.x_adv, out.queries, logits_clean=out.start_logits)
