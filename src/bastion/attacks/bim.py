"""BIM, the basic iterative method / iterative FGSM (Kurakin, Goodfellow & Bengio 2017,
https://arxiv.org/abs/1607.02533).

``T`` FGSM steps of size ``alpha`` (default ``eps / T``), each followed by clipping into the eps-ball and
the valid range. It starts at ``x`` (no random start) and returns the last iterate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from bastion.attacks._descent import Descent
from bastion.attacks.base import Attack, check_choice, check_int, check_positive
from bastion.attacks.losses import LOSSES
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class BIM(Attack):
    """Iterative FGSM.

    Args:
        eps: perturbation budget.
        steps: number of iterations ``T``.
        step_size: ``alpha``; default ``eps / steps``.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"margin"``.
        early_stop: freeze a sample once it succeeds (default False: the textbook T steps).
        bounds: the valid input range.
    """

    name: ClassVar[str] = "bim"
    eps: float
    steps: int = 10
    step_size: float | None = None
    norm: Literal["linf", "l2"] = "linf"
    loss: str = "ce"
    early_stop: bool = False
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_positive("eps", self.eps, allow_zero=True)
        check_int("steps", self.steps)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)
        check_choice("norm", self.norm, ("linf", "l2"))
        check_choice("loss", self.loss, LOSSES)
        _ = self.threat

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / self.steps

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, seed: int, keys: Tensor,
             logits_clean: Tensor) -> tuple[Tensor, Tensor]:
        d = Descent(self.threat, steps=self.steps, step_size=self.alpha, loss=self.loss, random_start=False,
                    keep_best=False, early_stop=self.early_stop)
        x_adv, _, _, queries = d.run(model, x, y, target, keys=keys, seed=seed, stream=0)
        return x_adv, queries
