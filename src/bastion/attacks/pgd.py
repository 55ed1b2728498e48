"""PGD, projected gradient descent with random start (Madry et al. 2018, https://arxiv.org/abs/1706.06083).

From a uniform random point of the eps-ball, ``steps`` steepest-ascent steps, each projected onto the ball
and the valid range. Restarts run only on samples not yet successful; each sample keeps its best point
(a successful point, the first one with early_stop, else the highest loss). Losses: cross-entropy or the Carlini-Wagner margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from bastion.attacks._descent import Descent, run_restarts
from bastion.attacks.base import Attack, check_choice, check_int, check_positive
from bastion.attacks.losses import LOSSES
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
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
            changes robust accuracy. On a randomized model (BaRT) a success seen under one random draw is
            often undone by the next draw, so pass ``early_stop=False`` there: naive PGD-40 on
            ``mnist-cnn-bart`` leaves 88% accuracy with early stopping and 60% without
            (``benchmarks/adaptive.py``).
        bounds: the valid input range.

    Example:
        >>> atk = PGD(eps=0.3, steps=40, step_size=0.01)           # doctest: +SKIP
        >>> res = atk(model, x, y)                                  # doctest: +SKIP
        >>> res = atk(model, x, y, target="least-likely")           # doctest: +SKIP
    """

    name: ClassVar[str] = "pgd"
    eps: float
    steps: int = 40
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    norm: Literal["linf", "l2"] = "linf"
    loss: str = "ce"
    early_stop: bool = True
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_positive("eps", self.eps, allow_zero=True)
        check_int("steps", self.steps)
        check_int("restarts", self.restarts)
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
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, seed: int, keys: Tensor,
             logits_clean: Tensor) -> tuple[Tensor, Tensor]:
        d = Descent(self.threat, steps=self.steps, step_size=self.alpha, loss=self.loss,
                    random_start=self.random_start, keep_best=True, early_stop=self.early_stop)
        return run_restarts(d, self.restarts, model, x, y, target, keys=keys, seed=seed)
