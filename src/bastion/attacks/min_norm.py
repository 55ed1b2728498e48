"""What the minimum-norm attacks share (:class:`Smallest`), and a white-box minimum-norm L2 attack: per-sample
bisection over eps of PGD-L2 (:class:`MinNormPGD`).

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

from bastion._model import judge
from bastion.attacks.base import MinimumNormAttack, Outcome, Task, choice, positive, whole
from bastion.attacks.descent import Descent, misclassified, named_loss
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def project_l2(x_adv: Tensor, x: Tensor, eps: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Project onto the L2 balls of per-sample radii ``eps`` (B,) around ``x``, then into ``bounds``."""
    return ThreatModel(norm="l2", eps=0.0, bounds=bounds).project(x_adv, x, eps=eps)


@dataclass(eq=False)
class Smallest:
    """Per sample, the smallest successful point a minimum-norm attack has found so far (its result).

    Points come with the success the attack's own forward pass saw. On a deterministic model that is the
    verdict, and a smaller successful point replaces the best one at once. On a randomized model one random
    draw's success may not survive the next draw, so a smaller point that one draw calls successful is first
    judged as the result will be (the mean-probability prediction over ``task.draws`` calls), and only then
    becomes the result; those calls count as queries.

    Attributes:
        x: (B, ...) the best points (the inputs where none was found).
        norm: float64 (B,) their norms (inf where none was found).
        logits: (B, K) the model's outputs at ``x`` where known (NaN rows elsewhere; always NaN on a randomized
            model, whose result is judged afresh).
        queries: int64 (B,) the model calls spent confirming points.
    """

    x: Tensor
    norm: Tensor
    logits: Tensor
    queries: Tensor
    randomized: bool = False
    draws: int = 1

    @classmethod
    def start(cls, task: Task) -> Smallest:
        b, dev = task.n, task.x.device
        return cls(x=task.x.clone(), norm=torch.full((b,), float("inf"), dtype=torch.float64, device=dev),
                   logits=torch.full((b, task.num_classes), float("nan"), dtype=task.x.dtype, device=dev),
                   queries=torch.zeros(b, dtype=torch.int64, device=dev), randomized=task.randomized,
                   draws=task.draws)

    @property
    def found(self) -> Tensor:
        """bool (B,): a (confirmed) successful point is known."""
        return torch.isfinite(self.norm)

    def offer(self, model: nn.Module, task: Task, idx: Tensor, xs: Tensor, norms: Tensor, ok: Tensor,
              logits: Tensor) -> Tensor:
        """Points ``xs`` of the samples ``idx`` with norms ``norms`` (float64), found successful (``ok``) by the
        forward pass that gave ``logits``. Returns bool: the point became the sample's result."""
        better = ok & (norms < self.norm[idx])
        if self.randomized and bool(better.any()):
            rows = better.nonzero().squeeze(1)
            judged, _ = judge(model, xs[rows].detach(), draws=self.draws)
            self.queries[idx[rows]] += self.draws
            better[rows] = task.success(judged, idx[rows])
        sel = idx[better]
        self.x[sel] = xs[better].detach().to(self.x.dtype)
        self.norm[sel] = norms[better]
        if not self.randomized:
            self.logits[sel] = logits[better].detach().to(self.logits.dtype)
        return better


@dataclass(frozen=True, kw_only=True)
class MinNormPGD(MinimumNormAttack):
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
    minimized_norm: ClassVar[str] = "l2"
    steps: int = whole(100)
    rel_step: float = positive(2.5)
    eps_init: float = positive(1.0)
    doublings: int = whole(6, minimum=0)
    search_steps: int = whole(10, minimum=0)
    loss: Literal["ce", "margin"] = choice("margin", ("ce", "margin"))
    bounds: tuple[float, float] = (0.0, 1.0)

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
            norm = (xa - x[idx]).to(torch.float64).flatten(1).norm(dim=1)
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
