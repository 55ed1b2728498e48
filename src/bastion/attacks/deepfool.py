"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to fool deep neural
networks", https://arxiv.org/abs/1511.04599).

A minimum-norm attack that walks to the nearest decision boundary of the model's linearisation. At the current
point ``x_i``, for each candidate class ``k`` other than the true label ``y`` (the ``candidates - 1`` classes with
the highest current scores), with ``f_k = Z_k(x_i) - Z_y(x_i)`` (negative while ``x_i`` is still classified as
``y``) and ``w_k = grad_x f_k``, the boundary between ``y`` and ``k`` of the linearised model is at distance
``|f_k| / ||w_k||_q`` (``q`` the dual norm: 2 for L2, 1 for Linf). The nearest one, ``l``, gives the step

* L2: ``r_i = (|f_l| / ||w_l||_2 + 1e-4) w_l / ||w_l||_2``;
* Linf: ``r_i = (|f_l| / ||w_l||_1 + 1e-4) sign(w_l)``

(the ``1e-4`` is the authors' own, to land just past the boundary). The steps add up to ``r = sum_i r_i``, the
next point is ``x + (1 + overshoot) r``, and an input stops at its first misclassification (at most ``steps``
steps). Targeted calls linearise one boundary, between the target ``t`` and the current best other class ``j``
(``f = Z_t - Z_j``).

Inputs live in a box (pixels in [0, 1]), which the paper does not model. Here the point is clipped into the
bounds after every step and the running sum ``r`` is kept equal to the step actually taken,
``(x_{i+1} - x) / (1 + overshoot)`` (foolbox lets it grow beyond the box, where later steps must first undo it:
on ``mnist-cnn`` keeping it equal gave slightly smaller perturbations). Away from the bounds this is the paper's
step exactly. (Linearising only in the directions the box leaves open converged in fewer steps but to
perturbations about 8% larger, so the full gradient is used.)

On a randomized model a misclassification seen under one random draw only stops an input once confirmed over
several draws (:class:`~bastion.attacks.min_norm.Smallest`). The result is the first (confirmed) adversarial
point; an input never fooled within ``steps`` steps is returned unchanged.

Cost per step: one forward pass and ``candidates - 1`` backward passes (one for targeted calls) for the inputs
not yet fooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.base import MinimumNormAttack, Outcome, Task, choice, positive, whole
from bastion.attacks.min_norm import Smallest
from bastion.errors import ConfigError
from bastion.threat import per_sample

_PAST_BOUNDARY = 1e-4


@dataclass(frozen=True, kw_only=True)
class DeepFool(MinimumNormAttack):
    """DeepFool, L2 or Linf, batched over inputs.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        steps: at most this many steps per input (the paper's implementation: 50).
        overshoot: the total step is ``(1 + overshoot)`` times the sum of the linearised steps (paper: 0.02).
        candidates: how many classes are linearised, the true one included (the highest-scoring at each step):
            fewer is faster (each costs a backward pass), ``None`` takes every class.
        bounds: the valid input range.

    Example:
        >>> res = DeepFool()(model, x, y)                        # doctest: +SKIP
        >>> res.success.float().mean(), res.norms["l2"].median() # doctest: +SKIP
    """

    name: ClassVar[str] = "deepfool"
    norm: Literal["l2", "linf"] = choice("l2", ("l2", "linf"))
    steps: int = whole(50)
    overshoot: float = positive(0.02, allow_zero=True)
    candidates: int | None = whole(10, minimum=2, optional=True)
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def cost(self) -> int:
        # a forward and (candidates - 1) backward passes a step; a few steps per input (3 to 12 on mnist-cnn)
        return min(self.steps, 8) * (self.candidates or 10)

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        x = task.x
        n, dev = task.n, x.device
        lo, hi = self.bounds
        best = Smallest.start(task)
        queries = torch.zeros(n, dtype=torch.int64, device=dev)
        total = torch.zeros_like(x)  # the running sum of the steps, r
        point = x.clone()
        active = torch.arange(n, device=dev)
        clean: Tensor | None = None
        k_cand = task.num_classes if self.candidates is None else min(self.candidates, task.num_classes)
        if k_cand < 2:
            raise ConfigError(f"DeepFool needs a model with at least 2 classes, got {task.num_classes}")
        scale = 1.0 + self.overshoot
        for i in range(self.steps + 1):
            xs = point[active].detach().requires_grad_(True)
            logits = model(xs)
            queries[active] += 1
            if clean is None:
                clean = logits.detach()  # the first forward pass is at x
            with torch.no_grad():
                ok = task.success(logits, active)
                d = (xs.detach() - x[active]).flatten(1).double()
                norms = d.norm(dim=1) if self.norm == "l2" else d.abs().amax(1)
                ok = best.offer(model, task, active, xs.detach(), norms, ok, logits)
                if best.randomized:  # an input stops once a success of its is confirmed
                    ok = best.found[active]
            go = ~ok
            if i == self.steps or not bool(go.any()):
                break
            step = self._step(logits, xs, task, active, go, k_cand)
            active = active[go]
            with torch.no_grad():
                moved = (x[active] + scale * (total[active] + step)).clamp(lo, hi)
                point[active] = moved
                total[active] = (moved - x[active]) / scale
        return Outcome(best.x, queries + best.queries, logits_adv=None if task.randomized else best.logits,
                       logits_clean=clean)

    def _step(self, logits: Tensor, xs: Tensor, task: Task, active: Tensor, go: Tensor, k_cand: int) -> Tensor:
        """The linearised step of the inputs ``go`` (bool over the rows of ``xs``) from their points ``xs``: the
        candidate boundaries are linearised one at a time, keeping the nearest (memory of one gradient per input)."""
        rows = torch.arange(logits.shape[0], device=logits.device)
        z = logits.detach()
        y = task.y[active]
        if task.target is None:
            pos = z.scatter(1, y[:, None], float("-inf")).topk(k_cand - 1, dim=1).indices  # (B, k): the best others
            neg = y[:, None].expand_as(pos)
        else:
            t = task.target[active]
            pos = t[:, None]
            neg = z.scatter(1, t[:, None], float("-inf")).argmax(1, keepdim=True)
        k = pos.shape[1]
        f = (z.gather(1, pos) - z.gather(1, neg))[go].double()  # (G, k): negative until the boundary is crossed
        best_dist = torch.full((f.shape[0],), float("inf"), dtype=torch.float64, device=f.device)
        best_w = torch.zeros_like(xs[go])
        best_dual = torch.ones_like(best_dist)
        for j in range(k):
            diff = logits[rows, pos[:, j]] - logits[rows, neg[:, j]]
            (g,) = torch.autograd.grad(diff.sum(), xs, retain_graph=j < k - 1)
            w = g[go]
            flat = w.flatten(1)
            dual = (flat.norm(dim=1) if self.norm == "l2" else flat.abs().sum(1)).double()
            dist = f[:, j].abs() / (dual + 1e-8)
            nearer = dist < best_dist
            best_dist = torch.where(nearer, dist, best_dist)
            best_dual = torch.where(nearer, dual, best_dual)
            best_w = torch.where(per_sample(nearer, w), w, best_w)
        size = best_dist + _PAST_BOUNDARY
        direction = (best_w / per_sample((best_dual + 1e-8).to(best_w.dtype), best_w) if self.norm == "l2"
                     else best_w.sign())
        return per_sample(size.to(best_w.dtype), best_w) * direction
