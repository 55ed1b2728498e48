"""Square Attack, Linf (Andriushchenko, Croce, Flammarion & Hein 2020, https://arxiv.org/abs/1912.00049).

A score-based black-box attack: it sees only the probabilities returned by an
:class:`~bastion.attacks.oracle.Oracle` and never a gradient. It is a random search over the vertices of
the Linf ball:

1. start from vertical stripes: every (channel, column) of the image is shifted by ``+eps`` or ``-eps``;
2. at iteration ``i`` pick, per sample, a random ``s x s`` window (``s = round(sqrt(p(i) * H * W))``) and
   set the perturbation there to ``+eps`` or ``-eps`` per channel;
3. keep the candidate if it lowers the loss (per sample), stop a sample as soon as it is misclassified
   (or classified as the target).

The window fraction ``p(i)`` follows the paper's piecewise-constant schedule: it starts at ``p_init`` and
halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10,000-iteration run; the
iteration index is rescaled to the number of iterations the query budget allows.

Losses (minimised), on the oracle's probabilities ``p``: ``"margin"`` is ``p_y - max_{j!=y} p_j``
(targeted: ``max_{j!=t} p_j - p_t``), ``"ce"`` is ``log p_y`` (targeted: ``-log p_t``).

Every sample is handled in parallel (no Python loop over samples); only samples not yet broken are
queried. Randomness is keyed per sample (:mod:`bastion._rng`), so a batch gives the same result as each of
its examples alone (given the same ``keys``), and results are a function of the generator's seed.

Query accounting (per sample, ``AttackResult.queries``): one query of the clean input, one of the stripe
initialisation, then one per iteration while the sample is unbroken; never more than ``max_queries``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from bastion._checks import shown
from bastion._rng import keyed_uniform
from bastion.attacks.base import Outcome, QueryAttack, Task, choice, is_success, positive, whole
from bastion.attacks.oracle import Oracle
from bastion.errors import ConfigError, InputShapeError
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: iterations (of a 10,000-iteration run) after which the window fraction halves
_HALVINGS: tuple[int, ...] = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_INIT_STREAM = 0
_ITER_STREAM = 1


def square_fraction(i: int, n_iters: int, p_init: float) -> float:
    """The paper's schedule: fraction of pixels the window covers at iteration ``i`` of ``n_iters``."""
    scaled = int(i * 10000 / max(n_iters, 1))
    halvings = sum(1 for b in _HALVINGS if scaled > b)
    return p_init / 2**halvings


def probability_loss(name: str, probs: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per-sample loss to *minimise*, from probabilities (B, K). Negative margin means success."""
    if name == "ce":
        logp = probs.clamp_min(1e-300).log()
        if target is None:
            return logp.gather(1, y[:, None]).squeeze(1)
        return -logp.gather(1, target[:, None]).squeeze(1)
    cls = y if target is None else target
    own = probs.gather(1, cls[:, None]).squeeze(1)
    other = probs.scatter(1, cls[:, None], float("-inf")).amax(1)
    return own - other if target is None else other - own


@dataclass(frozen=True, kw_only=True)
class Square(QueryAttack):
    """Square Attack in the Linf norm (score-based, gradient-free).

    Args:
        eps: Linf budget.
        max_queries: per-sample query budget, including the clean query and the initialisation.
        p_init: initial fraction of pixels covered by the square (the paper uses 0.8 on MNIST, 0.05 on
            ImageNet).
        loss: ``"margin"`` or ``"ce"`` (both on probabilities).
        bounds: the valid input range.

    Shape:
        ``x``: (N, C, H, W) images (flat (N, D) inputs are refused: the attack needs a spatial layout).

    Example:
        >>> atk = Square(eps=0.3, max_queries=1000)                # doctest: +SKIP
        >>> res = atk(model, x, y, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> res.queries.median()                                    # doctest: +SKIP
    """

    name: ClassVar[str] = "square"
    eps: float = positive(allow_zero=True)
    max_queries: int = whole(5000)
    p_init: float = positive(0.8)
    loss: Literal["margin", "ce"] = choice("margin", ("margin", "ce"))
    bounds: tuple[float, float] = (0.0, 1.0)

    def _check(self) -> None:
        if self.p_init > 1:
            raise ConfigError(f"p_init must be in (0, 1], got {shown(self.p_init)}")

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm="linf", eps=self.eps, bounds=self.bounds)

    def _query(self, oracle: Oracle, task: Task) -> Outcome:
        x, y, target, keys, seed = task.x, task.y, task.target, task.keys, task.seed
        if x.ndim != 4:
            raise InputShapeError(f"Square needs (N, C, H, W) images, got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        dev = x.device
        eps, loss, p_init = self.eps, self.loss, self.p_init
        lo, hi = self.bounds
        everyone = torch.arange(b, device=dev)

        def query(idx: Tensor, xs: Tensor) -> tuple[Tensor, Tensor]:
            probs = oracle(xs, idx).to(dev)
            t = None if target is None else target[idx]
            return probability_loss(loss, probs, y[idx], t), is_success(probs, y[idx], t)

        x_best = x.clone()
        loss_best, done = query(everyone, x)
        if self.max_queries < 2:
            return Outcome(x_best, oracle.counts.to(dev))

        # 1. vertical stripes: one random sign per (channel, column), constant along the rows
        idx = (~done).nonzero().squeeze(1)
        if idx.numel():
            u = keyed_uniform(keys[idx], (c, 1, w), seed=seed, stream=_INIT_STREAM, dtype=x.dtype).to(dev)
            stripes = torch.where(u < 0.5, -eps, eps).to(x.dtype)  # Python scalars would make it float32
            x_init = (x[idx] + stripes).clamp(lo, hi)
            l_init, ok = query(idx, x_init)
            x_best[idx], loss_best[idx], done[idx] = x_init, l_init, ok

        # 2. random search over squares
        n_iters = self.max_queries - 2
        rows = torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev)
        for i in range(n_iters):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            p = square_fraction(i, n_iters, p_init)
            s = int(min(max(round(math.sqrt(p * h * w)), 1), min(h, w)))
            u = keyed_uniform(keys[idx], (2 + c,), seed=seed, stream=_ITER_STREAM + i, dtype=torch.float64).to(dev)
            r0 = (u[:, 0] * (h - s + 1)).long().clamp(max=h - s)
            c0 = (u[:, 1] * (w - s + 1)).long().clamp(max=w - s)
            sign = torch.where(u[:, 2:] < 0.5, -1.0, 1.0).to(x.dtype).reshape(-1, c, 1, 1)
            in_r = (rows[None] >= r0[:, None]) & (rows[None] < (r0 + s)[:, None])
            in_c = (cols[None] >= c0[:, None]) & (cols[None] < (c0 + s)[:, None])
            window = (in_r[:, :, None] & in_c[:, None, :])[:, None]  # (n, 1, H, W)

            xs, xb = x[idx], x_best[idx]
            cand = torch.where(window, (xs + sign * eps).clamp(lo, hi), xb)
            # a window that already holds these signs would waste a query: flip its signs instead
            same = ((cand - xb).abs().flatten(1).amax(1) == 0).reshape(-1, 1, 1, 1)
            if bool(same.any()):
                cand = torch.where(window & same, (xs - sign * eps).clamp(lo, hi), cand)
            l_new, ok = query(idx, cand)
            accept = (l_new < loss_best[idx]) | ok
            sel = idx[accept]
            x_best[sel], loss_best[sel], done[sel] = cand[accept], l_new[accept], ok[accept]
            if i % 500 == 0:
                log.debug("square: iteration %d/%d, %d of %d samples unbroken", i, n_iters, int((~done).sum()), b)
        return Outcome(x_best, oracle.counts.to(dev))
