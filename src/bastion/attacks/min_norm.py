"""A white-box minimum-norm L2 attack: per-sample bisection over eps of PGD-L2.

For each sample it looks for (approximately) the smallest L2 radius at which PGD (Madry et al. 2018,
https://arxiv.org/abs/1706.06083) finds an adversarial example:

1. **Bracket**: run PGD at ``eps_init``, doubling each sample's radius until it succeeds (at most
   ``doublings`` times). A success at radius ``eps`` gives an upper bound ``hi`` (the norm of the point
   found, which can be below ``eps``), a failure a lower bound ``lo``.
2. **Bisect** ``search_steps`` times: PGD at ``(lo + hi) / 2`` for every bracketed sample at once.

The best (smallest-norm) adversarial point is returned. PGD runs with one radius *per sample*
(``eps`` is a (B,) tensor) through :class:`~bastion.attacks.descent.Descent`, so the whole batch moves together. It is a reference for
the black-box minimum-norm attacks (HopSkipJump): its threat model is unbounded (``eps = inf``) and the
result is judged by the norms reached. It is an upper bound on the true minimal distance, like any attack.
Its search stops at each sample's first success: on a randomized model that success may not hold under the
next draw (the base class judges the result over several draws, so the reported success is honest, but the
norms are then those of points that only sometimes fool the model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, Outcome, Task, check_choice, check_int, check_positive
from bastion.attacks.descent import Descent, misclassified, named_loss
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def _l2(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def project_l2(x_adv: Tensor, x: Tensor, eps: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Project onto the L2 balls of per-sample radii ``eps`` (B,) around ``x``, then into ``bounds``."""
    return ThreatModel(norm="l2", eps=0.0, bounds=bounds).project(x_adv, x, eps=eps)


@dataclass(frozen=True, kw_only=True)
class MinNormPGD(Attack):
    """Minimum-norm L2 attack by bisection over the radius of PGD-L2 (white-box reference).

    Args:
        steps: PGD steps per radius tried.
        rel_step: PGD step size as a multiple of ``eps / steps`` (Madry et al.'s 2.5).
        eps_init: first radius tried.
        doublings: at most this many doublings of the radius while bracketing.
        search_steps: bisection steps after bracketing (the bracket shrinks by ``2**search_steps``).
        loss: ``"ce"`` or ``"margin"``.
        bounds: the valid input range.

    Example:
        >>> res = MinNormPGD()(model, x, y)                          # doctest: +SKIP
        >>> res.norms["l2"].median()                                  # doctest: +SKIP
    """

    name: ClassVar[str] = "min-norm"
    steps: int = 100
    rel_step: float = 2.5
    eps_init: float = 1.0
    doublings: int = 6
    search_steps: int = 10
    loss: Literal["ce", "margin"] = "margin"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        check_positive("rel_step", self.rel_step)
        check_positive("eps_init", self.eps_init)
        check_int("doublings", self.doublings, minimum=0)
        check_int("search_steps", self.search_steps, minimum=0)
        check_choice("loss", self.loss, ("ce", "margin"))
        _ = self.threat

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm="l2", eps=float("inf"), bounds=self.bounds)

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        x = task.x
        b = x.shape[0]
        dev = x.device
        best = x.clone()
        best_norm = torch.full((b,), float("inf"), dtype=torch.float64, device=dev)
        lo = torch.zeros(b, dtype=torch.float64, device=dev)
        hi = best_norm.clone()
        queries = torch.zeros(b, dtype=torch.int64, device=dev)
        clean: list[Tensor] = []  # the first walk's first forward pass is at x: the clean outputs
        # each radius: PGD-L2 from x, per-sample radii and steps, a sample stopping at its first success
        walk = Descent(ThreatModel(norm="l2", eps=0.0, bounds=self.bounds), steps=self.steps, step_size=0.0,
                       keep_best=True, early_stop=True)

        def attempt(idx: Tensor, eps: Tensor) -> None:
            sub = task.subset(idx)
            d = replace(walk, step_size=self.rel_step * eps / self.steps)
            out = d.run(model, sub.x, named_loss(self.loss, sub.y, sub.target), success=misclassified(sub.y, sub.target),
                        keys=sub.keys, seed=task.seed, eps=eps)
            xa, ok = out.x_adv, out.success
            if not clean and out.start_logits is not None and idx.numel() == b:
                clean.append(out.start_logits)
            queries[idx] += out.queries
            norm = _l2((xa - x[idx]).to(torch.float64))
            better = ok & (norm < best_norm[idx])
            best[idx[better]] = xa[better]
            best_norm[idx[better]] = norm[better]
            hi[idx[ok]] = torch.minimum(hi[idx[ok]], norm[ok])
            lo[idx[~ok]] = torch.maximum(lo[idx[~ok]], eps[~ok])

        eps = torch.full((b,), float(self.eps_init), dtype=torch.float64, device=dev)
        for _ in range(self.doublings + 1):
            idx = torch.isinf(hi).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            attempt(idx, eps[idx])
            eps[idx] *= 2
        for _ in range(self.search_steps):
            idx = (torch.isfinite(hi) & (hi > 0) & (hi - lo > 1e-6)).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            attempt(idx, (lo[idx] + hi[idx]) / 2)
        log.debug("min-norm: %d of %d samples found", int(torch.isfinite(best_norm).sum()), b)
        return Outcome(best, queries, logits_clean=clean[0] if clean else None)
