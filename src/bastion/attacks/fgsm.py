"""FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, https://arxiv.org/abs/1412.6572).

Untargeted: ``x_adv = clip(x + eps * sign(grad_x J(x, y)))``. Targeted:
``x_adv = clip(x - eps * sign(grad_x J(x, y_target)))``. With ``norm="l2"`` the step is
``eps * grad / ||grad||_2`` (the fast gradient method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from bastion.attacks._descent import Descent
from bastion.attacks.base import Attack, check_choice, check_positive
from bastion.attacks.losses import LOSSES
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
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
    eps: float
    norm: Literal["linf", "l2"] = "linf"
    loss: str = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_positive("eps", self.eps, allow_zero=True)
        check_choice("norm", self.norm, ("linf", "l2"))
        check_choice("loss", self.loss, LOSSES)
        _ = self.threat

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, seed: int, keys: Tensor,
             logits_clean: Tensor) -> tuple[Tensor, Tensor]:
        d = Descent(self.threat, steps=1, step_size=self.eps, loss=self.loss, random_start=False,
                    keep_best=False, early_stop=False)
        x_adv, _, _, queries = d.run(model, x, y, target, keys=keys, seed=seed, stream=0)
        return x_adv, queries
