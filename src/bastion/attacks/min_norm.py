"""A white-box minimum-norm L2 attack: per-sample bisection over eps of PGD-L2.

For each sample it looks for (approximately) the smallest L2 radius at which PGD (Madry et al. 2018,
https://arxiv.org/abs/1706.06083) finds an adversarial example:

1. **Bracket**: run PGD at ``eps_init``, doubling each sample's radius until it succeeds (at most
   ``doublings`` times). A success at radius ``eps`` gives an upper bound ``hi`` (the norm of the point
   found, which can be below ``eps``), a failure a lower bound ``lo``.
2. **Bisect** ``search_steps`` times: PGD at ``(lo + hi) / 2`` for every bracketed sample at once.

The best (smallest-norm) adversarial point is returned. PGD runs with one radius *per sample*
(``eps`` is a (B,) tensor), so the whole batch moves together; this needs the small per-sample-eps
descent below rather than :class:`~bastion.attacks.PGD`, whose radius is one number. It is a reference for
the black-box minimum-norm attacks (HopSkipJump): its threat model is unbounded (``eps = inf``) and the
result is judged by the norms reached. It is an upper bound on the true minimal distance, like any attack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, check_choice, check_int, check_positive, is_success
from bastion.attacks.losses import LOSSES, loss_and_grad
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _l2(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def project_l2(x_adv: Tensor, x: Tensor, eps: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Project onto the L2 balls of per-sample radii ``eps`` (B,) around ``x``, then into ``bounds``."""
    delta = x_adv - x
    factor = (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta * _view(factor.to(x.dtype), delta)).clamp(*bounds)


def pgd_l2_per_sample(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    eps: Tensor,
    *,
    steps: int,
    rel_step: float,
    loss: str,
    bounds: tuple[float, float],
) -> tuple[Tensor, Tensor, Tensor]:
    """PGD-L2 from ``x`` with a radius per sample; each sample stops at its first success.

    Returns ``(x_adv, success, queries)``; ``x_adv`` is the first successful point (else the last iterate).
    """
    b = x.shape[0]
    x_adv = x.clone()
    alpha = rel_step * eps / steps
    success = torch.zeros(b, dtype=torch.bool, device=x.device)
    queries = torch.zeros(b, dtype=torch.int64, device=x.device)
    active = torch.arange(b, device=x.device)
    for _ in range(steps):
        xa = x_adv[active]
        t = None if target is None else target[active]
        logits, _, grad = loss_and_grad(model, xa, y[active], t, loss)
        queries[active] += 1
        with torch.no_grad():
            ok = is_success(logits, y[active], t)
            success[active[ok]] = True
            active, xa, grad = active[~ok], xa[~ok], grad[~ok]
            if active.numel() == 0:
                break
            step = grad / _view(_l2(grad).clamp_min(1e-12), grad)
            x_adv[active] = project_l2(xa + _view(alpha[active].to(x.dtype), xa) * step, x[active],
                                       eps[active], bounds)
    if active.numel():
        with torch.no_grad():
            t = None if target is None else target[active]
            ok = is_success(model(x_adv[active]), y[active], t)
            queries[active] += 1
            success[active[ok]] = True
    return x_adv, success, queries


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
    access: ClassVar[str] = "white-box"
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
        check_choice("loss", self.loss, LOSSES)
        _ = self.threat

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm="l2", eps=float("inf"), bounds=self.bounds)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, seed: int, keys: Tensor,
             logits_clean: Tensor) -> tuple[Tensor, Tensor]:
        b = x.shape[0]
        dev = x.device
        best = x.clone()
        best_norm = torch.full((b,), float("inf"), dtype=torch.float64, device=dev)
        best_norm[is_success(logits_clean, y, target)] = 0.0
        lo = torch.zeros(b, dtype=torch.float64, device=dev)
        hi = best_norm.clone()
        queries = torch.zeros(b, dtype=torch.int64, device=dev)

        def attempt(idx: Tensor, eps: Tensor) -> None:
            t = None if target is None else target[idx]
            xa, ok, q = pgd_l2_per_sample(model, x[idx], y[idx], t, eps, steps=self.steps, rel_step=self.rel_step,
                                          loss=self.loss, bounds=self.bounds)
            queries[idx] += q
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
        return best, queries
