"""HopSkipJump (Chen, Jordan & Wainwright 2020, https://arxiv.org/abs/1904.02144).

A decision-based (label-only) minimum-norm attack. It sees only predicted labels, through an
:class:`~bastion.attacks.oracle.Oracle` with ``output="labels"``, and walks along the decision boundary
towards the clean input:

1. **Start** from any adversarial point: an image of the pool ``starting_points`` that the model labels
   adversarially (for a targeted attack: as the target), else uniform noise (retried up to
   ``init_tries`` times). A sample without a start is returned unchanged (not successful).
2. **Binary search** on the segment from the clean input ``x*`` to the adversarial point (L2: the blend
   ``(1 - a) x* + a x_adv``; Linf: the clip of ``x_adv - x*`` to ``a`` times its Linf norm) down to a
   precision ``theta`` in ``a``, keeping the adversarial end: a point ``x_t`` next to the boundary.
3. **Gradient direction** at ``x_t`` by Monte-Carlo: ``B_t = B_0 sqrt(t)`` random unit directions ``u_b``
   (uniform on the unit L2 sphere, for both norms), ``phi_b = +1`` if ``x_t + delta_t u_b``
   is adversarial else ``-1``, and ``v = mean_b (phi_b - mean(phi)) u_b`` (the baseline is dropped when all
   ``phi_b`` agree); ``delta_t = sqrt(d) theta dist_{t-1}`` (L2) or ``d theta dist_{t-1}`` (Linf) with
   ``theta = gamma / d^{3/2}`` (L2) or ``gamma / d^2`` (Linf).
4. **Geometric step search**: ``xi = dist_t / sqrt(t)``, halved until ``x_t + xi v`` (``v`` normalised, or
   its sign for Linf) is adversarial; then back to 2.

The best (closest) adversarial point found is returned. It is a minimum-norm attack: its threat model is
unbounded in distance (``eps = inf``); compare attacks by the norms they reach. The point sits on the
adversarial side of the boundary, but within ``theta`` of it: where the margin is down at float rounding,
the result's final evaluation (the model run on another batch composition than the oracle's queries) can,
rarely, see it on the other side and report no success (seen once in 48 targeted MNIST attacks).

Batching: every sample carries its own state (current point, distance, iteration); each phase queries all
samples that need it in one batched call. The only per-sample Python loop draws the random directions:
each sample and iteration gets its own ``torch.Generator`` seeded from the keyed RNG (drawing millions of
normals through the keyed hash is several times slower than the model itself), so a batch still equals its
single examples given the same ``keys``.

Queries (per sample, hard-capped at ``max_queries`` by the oracle): one clean query, the start search,
the binary searches, the gradient samples and the step searches. An iteration only starts when the
sample can still pay for its binary search; the number of directions ``B_t`` is cut to what is left.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from bastion._checks import check_images
from bastion._rng import keyed_bits, keyed_uniform
from bastion.attacks.base import (
    Access,
    MinimumNormAttack,
    Outcome,
    QueryAttack,
    Task,
    choice,
    positive,
    whole,
)
from bastion.attacks.oracle import Oracle, OracleOutput
from bastion.errors import ConfigError, InputShapeError
from bastion.threat import per_sample

log = logging.getLogger(__name__)

_POOL_STREAM = 11
_NOISE_STREAM = 101
_GRAD_STREAM = 100_003


@dataclass(frozen=True, kw_only=True)
class HopSkipJump(QueryAttack, MinimumNormAttack):
    """HopSkipJump, label-only, minimum-norm (L2 or Linf), untargeted or targeted.

    Args:
        max_queries: per-sample query budget (the clean query included).
        norm: ``"l2"`` or ``"linf"``.
        gamma: scales the boundary precision ``theta`` and so the probe radius ``delta_t`` (paper: 1).
        init_evals: ``B_0``, directions in the first gradient estimate (paper: 100).
        max_evals: cap on ``B_t`` (paper: 10,000).
        step_halvings: at most this many halvings in the geometric step search (the step is then
            abandoned for this iteration).
        init_tries: uniform-noise draws tried per sample to find a start (after the pool).
        starting_points: optional pool of inputs (M, *x.shape[1:]) inside the bounds, tried in a keyed random
            order per sample before noise. Needed in practice for targeted attacks on data where noise is
            rarely classified as the target: pass a few inputs of each class (e.g. training images).
        bounds: the valid input range.

    Example:
        >>> atk = HopSkipJump(max_queries=5000)                        # doctest: +SKIP
        >>> res = atk(model, x, y)                                      # doctest: +SKIP
        >>> res.norms["l2"].median(), res.queries.max()                 # doctest: +SKIP
        >>> pool = train_images[:100]                                   # doctest: +SKIP
        >>> res = HopSkipJump(starting_points=pool)(model, x, y, target="random")  # doctest: +SKIP
    """

    name: ClassVar[str] = "hsj"
    access: ClassVar[Access] = "label"
    output: ClassVar[OracleOutput] = "labels"
    max_queries: int = whole(5000)
    norm: Literal["l2", "linf"] = choice("l2", ("l2", "linf"))
    gamma: float = positive(1.0)
    init_evals: int = whole(100)
    max_evals: int = whole(10_000)
    step_halvings: int = whole(25, minimum=0)
    init_tries: int = whole(100, minimum=0)
    starting_points: Tensor | None = field(default=None, repr=False, compare=False)
    bounds: tuple[float, float] = (0.0, 1.0)

    def _check(self) -> None:
        if self.starting_points is not None:
            if not isinstance(self.starting_points, Tensor) or self.starting_points.ndim < 2:
                raise ConfigError("starting_points must be a tensor (M, ...) of inputs")
            check_images(self.starting_points, bounds=self.bounds, name="starting_points")

    def _query(self, oracle: Oracle, task: Task) -> Outcome:
        x = task.x
        pool = self.starting_points
        if pool is not None:
            if tuple(pool.shape[1:]) != tuple(x.shape[1:]):
                raise InputShapeError(
                    f"starting_points has inputs of shape {tuple(pool.shape[1:])}, x has {tuple(x.shape[1:])}"
                )
            pool = pool.to(device=x.device, dtype=x.dtype)
        x_adv = _HSJRun(self, oracle, x, task.y, task.target, keys=task.keys, seed=task.seed, pool=pool).run()
        return Outcome(x_adv, oracle.counts.to(x.device))


class _HSJRun:
    """The state of one HopSkipJump call (per-sample tensors); not part of the public API."""

    def __init__(self, cfg: HopSkipJump, oracle: Oracle, x: Tensor, y: Tensor, target: Tensor | None, *,
                 keys: Tensor, seed: int, pool: Tensor | None) -> None:
        self.cfg, self.oracle, self.x, self.y, self.target = cfg, oracle, x, y, target
        self.keys, self.seed, self.pool = keys, seed, pool
        self.dev = x.device
        self.d = x[0].numel()
        self.lo, self.hi = cfg.bounds
        self.theta = cfg.gamma / (self.d ** 1.5 if cfg.norm == "l2" else self.d**2)
        self.bs_steps = max(1, math.ceil(math.log2(1.0 / self.theta)))

    # ------------------------------------------------------------------ primitives
    def is_adv(self, idx: Tensor, xs: Tensor) -> Tensor:
        """Query the labels of ``xs`` (rows charged to samples ``idx``): bool, adversarial or not."""
        labels = self.oracle(xs, idx).to(self.dev)
        if self.target is None:
            return labels != self.y[idx]
        return labels == self.target[idx]

    def remaining(self, idx: Tensor) -> Tensor:
        return self.oracle.remaining(idx).to(self.dev)

    def dist(self, xa: Tensor, x0: Tensor) -> Tensor:
        diff = (xa - x0).flatten(1)
        return diff.norm(dim=1) if self.cfg.norm == "l2" else diff.abs().amax(1)

    def toward(self, x0: Tensor, xa: Tensor, a: Tensor) -> Tensor:
        """The point at fraction ``a`` (per sample) of the way from ``x0`` to ``xa`` in this norm."""
        if self.cfg.norm == "l2":
            return x0 + per_sample(a, x0) * (xa - x0)
        r = per_sample(a * self.dist(xa, x0), x0)
        return x0 + torch.maximum(torch.minimum(xa - x0, r), -r)

    def binary_search(self, idx: Tensor, xa: Tensor) -> Tensor:
        """Move the adversarial points ``xa`` of samples ``idx`` to the boundary (adversarial side)."""
        x0 = self.x[idx]
        low = torch.zeros(idx.numel(), dtype=torch.float64, device=self.dev)
        high = torch.ones_like(low)
        for _ in range(self.bs_steps):
            mid = (low + high) / 2
            adv = self.is_adv(idx, self.toward(x0, xa, mid.to(x0.dtype)))
            high = torch.where(adv, mid, high)
            low = torch.where(adv, low, mid)
        return self.toward(x0, xa, high.to(x0.dtype))

    # ------------------------------------------------------------------ phases
    def find_starts(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Adversarial starting points for samples ``idx``: ``(found bool, points)``. Tried in turn on the samples
        without one that can still pay for a binary search: the pool's inputs (in a keyed order per sample), then
        ``init_tries`` draws of uniform noise."""
        shape = tuple(self.x.shape[1:])
        found = torch.zeros(idx.numel(), dtype=torch.bool, device=self.dev)
        start = self.x[idx].clone()
        pool = self.x[:0] if self.pool is None else self.pool
        m = pool.shape[0]
        if m:
            order = keyed_uniform(self.keys[idx], (m,), seed=self.seed, stream=_POOL_STREAM).to(self.dev).argsort(1)
        for k in range(m + self.cfg.init_tries):
            todo = (~found & (self.remaining(idx) > self.bs_steps)).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            if k < m:
                cand = pool[order[todo, k]]
            else:
                u = keyed_uniform(self.keys[idx[todo]], shape, seed=self.seed, stream=_NOISE_STREAM + k - m,
                                  dtype=self.x.dtype).to(self.dev)
                cand = self.lo + (self.hi - self.lo) * u
            ok = self.is_adv(idx[todo], cand)
            found[todo[ok]] = True
            start[todo[ok]] = cand[ok]
        return found, start

    def directions(self, idx: Tensor, n: int, t: int) -> Tensor:
        """``n`` random unit directions per sample of ``idx``, shape (len(idx), n, *x.shape[1:])."""
        shape = (n, *self.x.shape[1:])
        # rows of a multiple of 16 values: torch's CPU normal sampler fills blocks of 16, so a sample's first
        # directions are then the same whatever n its chunk needs (a batch equals its single examples)
        padded = -(-self.d // 16) * 16
        seeds = keyed_bits(self.keys[idx], (1,), seed=self.seed, stream=_GRAD_STREAM + t).reshape(-1).tolist()
        out = torch.empty((idx.numel(), *shape), dtype=self.x.dtype, device=self.dev)
        g = torch.Generator(device=self.dev)
        for i, s in enumerate(seeds):  # RNG only; all queries below are batched
            g.manual_seed(int(s))
            draw = torch.randn((n, padded), generator=g, device=self.dev, dtype=self.x.dtype)
            out[i] = draw[:, : self.d].reshape(shape)
        norms = out.flatten(2).norm(dim=2)
        return out / norms.clamp_min(1e-12).reshape(*norms.shape, *([1] * (out.ndim - 2)))

    def estimate_direction(self, idx: Tensor, xb: Tensor, dist: Tensor, n_evals: Tensor, t: int) -> Tensor:
        """Monte-Carlo estimate of the boundary normal at ``xb`` (unit L2 vector, or sign vector for Linf)."""
        d = self.d
        delta = (math.sqrt(d) if self.cfg.norm == "l2" else d) * self.theta * dist
        chunk = max(1, int(2_000_000 // (self.d * max(int(n_evals.max()), 1))))
        est = torch.zeros_like(xb)
        for s in range(0, idx.numel(), chunk):
            sl = slice(s, s + chunk)
            nb = n_evals[sl]
            bmax = int(nb.max())
            u = self.directions(idx[sl], bmax, t)  # (c, bmax, ...)
            base = xb[sl].unsqueeze(1)
            dl = delta[sl].reshape(-1, 1, *([1] * (u.ndim - 2)))
            probe = (base + dl * u).clamp(self.lo, self.hi)
            rv = (probe - base) / dl  # the directions actually probed, after clipping
            valid = torch.arange(bmax, device=self.dev)[None] < nb[:, None]  # (c, bmax)
            rows = valid.nonzero()
            owner = idx[sl][rows[:, 0]]
            adv = self.is_adv(owner, probe[rows[:, 0], rows[:, 1]])
            phi = torch.zeros(valid.shape, dtype=xb.dtype, device=self.dev)
            phi[rows[:, 0], rows[:, 1]] = torch.where(adv, 1.0, -1.0).to(xb.dtype)
            mean = phi.sum(1) / nb.to(xb.dtype)
            agree = mean.abs() == 1
            phi_c = torch.where(valid, phi - torch.where(agree, 0.0, mean)[:, None], 0.0)
            g = (phi_c.reshape(*phi_c.shape, *([1] * (u.ndim - 2))) * rv).sum(1) / per_sample(nb.to(xb.dtype), xb[sl])
            est[sl] = g
        if self.cfg.norm == "l2":
            return est / per_sample(est.flatten(1).norm(dim=1).clamp_min(1e-12), est)
        return est.sign()

    def step_search(self, idx: Tensor, xb: Tensor, v: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        """Halve ``xi`` until ``xb + xi v`` is adversarial: ``(moved bool, new points)``."""
        moved = torch.zeros(idx.numel(), dtype=torch.bool, device=self.dev)
        new = xb.clone()
        xi = xi.clone()
        for _ in range(self.cfg.step_halvings + 1):
            todo = (~moved & (self.remaining(idx) > self.bs_steps)).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            cand = (xb[todo] + per_sample(xi[todo], v) * v[todo]).clamp(self.lo, self.hi)
            ok = self.is_adv(idx[todo], cand)
            moved[todo[ok]] = True
            new[todo[ok]] = cand[ok]
            xi[todo[~ok]] /= 2
        return moved, new

    # ------------------------------------------------------------------ main loop
    def run(self) -> Tensor:
        cfg, x = self.cfg, self.x
        b = x.shape[0]
        everyone = torch.arange(b, device=self.dev)
        best = x.clone()
        clean_adv = self.is_adv(everyone, x)  # already misclassified: distance 0
        idx = (~clean_adv).nonzero().squeeze(1)
        if idx.numel() == 0:
            return best
        found, start = self.find_starts(idx)
        idx, start = idx[found], start[found]
        pay = self.remaining(idx) >= self.bs_steps
        idx, start = idx[pay], start[pay]
        if idx.numel() == 0:
            return best
        xb = self.binary_search(idx, start)
        dist = self.dist(xb, x[idx])
        best[idx] = xb
        best_dist = torch.full((b,), float("inf"), dtype=dist.dtype, device=self.dev)
        best_dist[idx] = dist
        # per-sample state of the samples still iterating: idx, xb, dist; t is shared (all start together)
        t = 0
        while idx.numel():
            t += 1
            left = self.remaining(idx)
            n_evals = torch.clamp(left - self.bs_steps - 1, max=min(int(cfg.init_evals * math.sqrt(t)), cfg.max_evals))
            go = n_evals >= 1
            idx, xb, dist, n_evals = idx[go], xb[go], dist[go], n_evals[go]
            if idx.numel() == 0:
                break
            v = self.estimate_direction(idx, xb, dist, n_evals, t)
            xi = dist / math.sqrt(t)
            moved, cand = self.step_search(idx, xb, v, xi)
            if bool(moved.any()):
                m = moved.nonzero().squeeze(1)
                xb_new = self.binary_search(idx[m], cand[m])
                xb[m] = xb_new
                dist[m] = self.dist(xb_new, x[idx[m]])
                better = dist[m] < best_dist[idx[m]]
                best[idx[m][better]] = xb_new[better]
                best_dist[idx[m][better]] = dist[m][better]
            # a sample whose step search failed keeps its point and tries again (with more directions)
            # while it can still pay for an iteration; the check is at the top of the loop
            log.debug("hsj: iteration %d, %d samples active, median dist %.4f", t, idx.numel(),
                      float(dist.median()) if dist.numel() else float("nan"))
        return best
