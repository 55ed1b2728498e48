"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack", https://arxiv.org/abs/1907.02044), as AutoAttack runs it.

FAB looks for the adversarial point closest to the input. Towards a target class ``t``, each iteration
linearises the boundary between the true class ``y`` and ``t`` at the current point ``x_k``: the hyperplane
``g(x_k) + grad g(x_k) . (z - x_k) = 0`` with ``g = z_t - z_y`` (the logits). It projects both ``x_k`` and the
original input ``x`` onto that hyperplane inside the valid box, in the attack's norm (steps ``d_k`` and
``d_0``: :func:`boundary_step`), and moves to a mix of the two, overshooting by ``eta``::

    alpha   = min(|d_k| / (|d_k| + |d_0|), alpha_max)
    x_{k+1} = clip((1 - alpha) (x_k + eta d_k) + alpha (x + eta d_0))

Leaning towards ``x + d_0`` keeps the point close to the input. When ``x_{k+1}`` is misclassified it is recorded
if it is the closest so far, and pulled back towards the input: ``x_{k+1} = x + beta (x_{k+1} - x)``.

FAB-T runs once towards each of the ``targets`` classes the model ranks highest after the true one on the
clean input (AutoAttack: 9), each run on the samples not yet broken, any misclassification counting as a
success. As a fixed-budget attack its result is the
closest misclassified point found if it lies within ``eps`` (a point counts as broken only inside the threat
model), else the closest one found beyond ``eps`` (or the last iterate) projected onto the ball. On a deterministic model a sample stops once it has such a point. A target given
to the call replaces the ranking: success is then being classified as that target, and the linearised
function ``z_t - max_{j != t} z_j`` (the class in the way of the target, ``y`` at first).

Untargeted FAB (which linearises the boundary towards every class, a backward pass per class and step) is
left out: AutoAttack's standard version runs only FAB-T.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from bastion.attacks.base import BallAttack, Outcome, Task, positive, unit, whole
from bastion.attacks.descent import misclassified, value_and_grad
from bastion.threat import ThreatModel, per_sample

log = logging.getLogger(__name__)


def boundary_step(p: Tensor, w: Tensor, b: Tensor, *, bounds: tuple[float, float], norm: str) -> Tensor:
    """The smallest step ``d`` (in the ``"linf"`` or ``"l2"`` norm) that puts the points ``p`` on the hyperplanes
    ``w . (p + d) = b`` while keeping ``p + d`` inside ``bounds`` (rows: ``p``, ``w`` (B, D), ``b`` (B,)). Where
    the box does not reach a hyperplane, the step to the corner of the box that comes closest.

    Per coordinate the optimal step is ``sign(w_i) min(mu, room_i)`` (Linf) or ``sign(w_i) min(mu |w_i|,
    room_i)`` (L2), with ``room_i`` the distance to the bound in that direction; ``w . d`` grows piecewise
    linearly with ``mu``, so ``mu`` is found exactly by sorting the breakpoints.
    """
    lo, hi = bounds
    c = b - (w * p).sum(1)
    w = w * torch.sign(c)[:, None]  # now w . d = |c| >= 0 is wanted
    c = c.abs()
    a = w.abs()
    live = a > 0
    room = torch.where(w > 0, hi - p, p - lo).clamp_min(0.0) * live
    # coordinate i moves by min(mu, room_i) (Linf) or min(mu a_i, room_i) (L2): it is free until mu reaches brk_i,
    # adding slope_i per unit of mu to w . d, and gives cap_i once at its bound
    if norm == "linf":
        slope, brk = a, room
    else:
        slope, brk = a * a, room / torch.where(live, a, torch.ones_like(a))
    cap = a * room
    brk_s, order = brk.sort(1)
    cap_s, slope_s = cap.gather(1, order), slope.gather(1, order)
    given = cap_s.cumsum(1)
    total = slope.sum(1)
    free = total[:, None] - slope_s.cumsum(1)
    reach = given + brk_s * free  # w . d at each breakpoint, nondecreasing
    m = (reach < c[:, None]).sum(1)
    before = (m - 1).clamp_min(0)[:, None]
    given_m = torch.where(m > 0, given.gather(1, before).squeeze(1), torch.zeros_like(c))
    free_m = torch.where(m > 0, free.gather(1, before).squeeze(1), total)
    ok = (m < p.shape[1]) & (free_m > 0)
    mu = torch.where(ok, (c - given_m) / torch.where(ok, free_m, torch.ones_like(free_m)), torch.full_like(c, float("inf")))
    size = torch.minimum(mu[:, None] * (1.0 if norm == "linf" else a), room)
    return torch.where(live, torch.sign(w) * size, torch.zeros_like(size))


@dataclass(frozen=True, kw_only=True)
class FAB(BallAttack):
    """FAB-T: the targeted Fast Adaptive Boundary attack, kept within ``eps`` (Croce & Hein 2020).

    Args:
        eps: perturbation budget: a point counts only within it.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (each a forward and backward pass, and a forward pass at the new point).
        targets: how many target classes to try, in order of the clean outputs (AutoAttack: 9).
        restarts: runs per target; the first starts at the input, the others at random points of the ball of
            radius ``eps / 2``.
        alpha_max: the largest weight of the step from the input.
        eta: overshoot of each projection onto the linearised boundary.
        beta: how far a misclassified point is pulled back towards the input.
        bounds: the valid input range.

    Example:
        >>> res = FAB(eps=0.3)(model, x, y)                                 # doctest: +SKIP
    """

    name: ClassVar[str] = "fab"
    steps: int = whole(100)
    targets: int = whole(9)
    restarts: int = whole(1)
    alpha_max: float = unit(0.1)
    eta: float = positive(1.05)
    beta: float = unit(0.9)

    @property
    def label(self) -> str:
        return "fab-t" + ("" if self.norm == "linf" else f"-{self.norm}")

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        b = task.n
        dev = task.x.device
        stop = task.may_stop_early
        clean, runs = task.target_runs(model, self.targets)
        queries = torch.full((b,), int(clean is not None), dtype=torch.int64, device=dev)
        best = task.x.clone()
        best_dist = torch.full((b,), float("inf"), dtype=torch.float64, device=dev)
        near = task.x.clone()
        near_dist = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
        stream = 0
        for target in runs:
            assert target is not None  # targets >= 1: never an untargeted run
            for r in range(self.restarts):
                todo = torch.isinf(best_dist).nonzero().squeeze(1) if stop else torch.arange(b, device=dev)
                if todo.numel() == 0:
                    break
                sub = task.subset(todo)
                start = sub.x if r == 0 else ThreatModel(norm=self.norm, eps=self.eps / 2, bounds=self.bounds).random_init(
                    sub.x, sub.keys, seed=task.seed, stream=stream)
                stream += 1
                x_found, dist, x_near, d_near, q = self._walk(model, sub, target[todo], start, stop)
                queries[todo] += q
                better = dist < best_dist[todo]
                best[todo[better]] = x_found[better]
                best_dist[todo[better]] = dist[better]
                closer = (d_near < near_dist[todo]) | torch.isnan(near_dist[todo])
                near[todo[closer]] = x_near[closer]
                near_dist[todo[closer]] = d_near[closer]
        log.debug("fab: %d of %d samples broken within eps", int(torch.isfinite(best_dist).sum()), b)
        # where no point within eps was found: the closest point beyond it (or the last iterate) brought into the
        # ball, a point towards the boundary (the evaluation then sees the loss rise where FAB moved at all)
        out = torch.where(per_sample(torch.isinf(best_dist), best), near, best)
        return Outcome(self.threat.project(out, task.x), queries, logits_clean=clean)

    def _distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-sample distance in the attack's norm, float64 (B,)."""
        diff = (a - b).flatten(1)
        return (diff.abs().amax(1) if self.norm == "linf" else diff.norm(dim=1)).double()

    def _walk(self, model: nn.Module, task: Task, target: Tensor, start: Tensor,
              stop: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One FAB run towards ``target`` from ``start``: the closest misclassified point within eps and its
        distance (inf where none), the closest misclassified point at any distance (else the last iterate) and
        its distance, and the queries. Each step costs a forward and backward pass at the current point (its
        linearised boundary) and a forward pass at the new point (is it misclassified?)."""
        x, y = task.x, task.y
        b = x.shape[0]
        dev = x.device
        threat = self.threat
        success = misclassified(y, task.target)

        def gap(logits: Tensor, idx: Tensor | None) -> Tensor:
            """FAB-T's linearised function: z_t - z_y (any misclassification succeeds); towards a target given to
            the call, z_t - max_{j != t} z_j (the same while y is the top class; then the class in the way)."""
            i = slice(None) if idx is None else idx
            own = logits.gather(1, target[i][:, None]).squeeze(1)
            if task.target is None:
                return own - logits.gather(1, y[i][:, None]).squeeze(1)
            return own - logits.scatter(1, target[i][:, None], float("-inf")).amax(1)

        found = x.clone()
        dist = torch.full((b,), float("inf"), dtype=torch.float64, device=dev)
        near = start.clone()  # the closest misclassified point at any distance (else the last iterate)
        near_dist = dist.clone()
        queries = torch.zeros(b, dtype=torch.int64, device=dev)
        idx = torch.arange(b, device=dev)

        def record(ids: Tensor, pts: Tensor, out: Tensor) -> Tensor:
            """Keep the closest misclassified points (within eps, and at any distance); returns the misclassified."""
            ok = success(out, ids)
            d = self._distance(pts, x[ids])
            closer = ok & (d < near_dist[ids])
            near[ids[closer]] = pts[closer]
            near_dist[ids[closer]] = d[closer]
            closer &= d <= threat.eps + 1e-12
            found[ids[closer]] = pts[closer]
            dist[ids[closer]] = d[closer]
            return ok

        cur = start
        for i in range(self.steps + 1):
            if stop:  # a sample with a point within eps is done
                keep = torch.isinf(dist[idx])
                if not bool(keep.all()):
                    idx, cur = idx[keep], cur[keep]
            if idx.numel() == 0 or i == self.steps:
                break
            # the linearised boundary at the current point (one more check of it: it may be a pulled-back point)
            logits, g, grad = value_and_grad(model, cur, gap, idx)
            queries[idx] += 1
            with torch.no_grad():
                record(idx, cur, logits)
                x0 = x[idx]
                n = idx.numel()
                w = grad.flatten(1)
                hb = (w * cur.flatten(1)).sum(1) - g
                d = boundary_step(torch.cat([cur.flatten(1), x0.flatten(1)]), torch.cat([w, w]), torch.cat([hb, hb]),
                                  bounds=self.bounds, norm=self.norm)
                size = self._distance(d, torch.zeros_like(d)).clamp_min(1e-8)
                alpha = (size[:n] / (size[:n] + size[n:])).clamp(0.0, self.alpha_max).to(x.dtype)
                alpha = per_sample(alpha, x)
                step_cur, step_x = d[:n].reshape(cur.shape), d[n:].reshape(cur.shape)
                new = ((1 - alpha) * (cur + self.eta * step_cur) + alpha * (x0 + self.eta * step_x)).clamp(*self.bounds)
                out = model(new)
                queries[idx] += 1
                ok = record(idx, new, out)
                # a misclassified point is pulled back towards the input
                cur = torch.where(ok.reshape(alpha.shape), x0 + self.beta * (new - x0), new)
                unbroken = idx[torch.isinf(near_dist[idx])]
                near[unbroken] = cur[torch.isinf(near_dist[idx])]
        return found, dist, near, near_dist, queries
