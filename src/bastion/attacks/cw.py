"""The Carlini & Wagner L2 attack (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks",
https://arxiv.org/abs/1608.04644).

A minimum-norm attack: for each input ``x`` it looks for the smallest L2 perturbation that fools the model, by
minimising

    ``||x' - x||_2^2 + c * f(x')``,   ``f(x') = max(Z_y(x') - max_{j != y} Z_j(x') + kappa, 0)``

(targeted: ``f(x') = max(max_{j != t} Z_j(x') - Z_t(x') + kappa, 0)``) over the logits ``Z``, where ``kappa``
(``confidence``) asks for a margin beyond the decision boundary. The box constraint is removed by a change of
variables: ``x' = a + b tanh(w)`` maps any ``w`` into the bounds ``(a - b, a + b)``. bastion writes it as
``x' = x + b (tanh(w0 + delta) - tanh(w0))`` with ``w0`` the tanh-space image of ``x``, so that ``delta = 0`` is
``x`` itself (the plain form is off by up to ``1e-6 b`` from ``x`` because ``atanh`` is taken at
``0.999999 (x - a) / b``), and optimises ``delta`` with Adam from zero.

The constant ``c`` trades the distance against the misclassification term, and the best value differs from
input to input, so it is searched per input: starting at ``initial_const``, multiplied by 10 until an
adversarial example is found, then bisected between the largest ``c`` that failed and the smallest that
succeeded, ``search_steps`` times in all (the paper's binary search; with ``search_steps >= 10`` the last step
uses the upper bound, as in the authors' code). Across every ``c`` and every Adam step the smallest successful
perturbation is kept.

``abort_early`` (the paper's): every tenth of ``steps`` each input's objective is compared with its value a
tenth earlier, and an input that did not improve by 0.01% stops for this ``c``. It is turned off on randomized
models, whose objective changes from call to call; there, a success seen under one random draw only becomes
the result once confirmed over several draws (:class:`~bastion.attacks.min_norm.Smallest`).

Every input is optimised independently (the objective is a sum over inputs and Adam's moments are
elementwise), so a batch gives what each of its inputs gives alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from bastion.attacks.base import MinimumNormAttack, Outcome, Task, flag, positive, whole
from bastion.attacks.descent import named_loss, value_and_grad
from bastion.attacks.min_norm import Smallest

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


@dataclass(frozen=True, kw_only=True)
class CW(MinimumNormAttack):
    """Carlini & Wagner's L2 attack, with the per-input binary search over the constant ``c``.

    Args:
        steps: Adam steps for each value of ``c`` (the paper: 10,000 with early abort; foolbox's default too).
        search_steps: values of ``c`` tried per input (the paper's binary search steps: 9).
        lr: Adam's step size (the paper: 0.01).
        initial_const: the first ``c`` (the paper: 0.001).
        confidence: ``kappa``, the margin an adversarial example must clear (0: the smallest perturbation).
        abort_early: stop an input's optimisation for the current ``c`` once its objective stops improving
            (ignored on randomized models).
        bounds: the valid input range.

    Example:
        >>> res = CW(steps=200)(model, x, y)                     # doctest: +SKIP
        >>> res.norms["l2"][res.success].median()               # doctest: +SKIP
    """

    name: ClassVar[str] = "cw"
    minimized_norm: ClassVar[str] = "l2"
    steps: int = whole(1000)
    search_steps: int = whole(9)
    lr: float = positive(0.01)
    initial_const: float = positive(1e-3)
    confidence: float = positive(0.0, allow_zero=True)
    abort_early: bool = flag(True)
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def cost(self) -> int:
        return self.steps * self.search_steps  # at most (early abort stops most inputs sooner)

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        x = task.x
        n, dev = task.n, x.device
        lo_b, hi_b = self.bounds
        a, b = (lo_b + hi_b) / 2, (hi_b - lo_b) / 2
        w0 = torch.atanh(((x - a) / b) * (1 - 1e-6))
        t0 = torch.tanh(w0)
        best = Smallest.start(task)
        queries = torch.zeros(n, dtype=torch.int64, device=dev)
        const = torch.full((n,), float(self.initial_const), dtype=torch.float64, device=dev)
        lower = torch.zeros(n, dtype=torch.float64, device=dev)
        upper = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)
        abort = self.abort_early and not task.randomized
        check_every = math.ceil(self.steps / 10)
        clean: Tensor | None = None
        kappa = float(self.confidence)
        margin = named_loss("margin", task.y, task.target)  # how far past the decision boundary (> 0: fooled)

        def objective(logits: Tensor, rows: Tensor | None) -> Tensor:
            """``c * f(x')`` for the samples ``rows``."""
            return (c if rows is None else c[rows]) * (kappa - margin(logits, rows)).clamp_min(0)

        for s in range(self.search_steps):
            if s == self.search_steps - 1 and self.search_steps >= 10:
                const = torch.where(torch.isfinite(upper), upper, const)
            c = const.to(x.dtype)  # read by ``objective``
            delta = torch.zeros_like(x)
            m, v = torch.zeros_like(x), torch.zeros_like(x)
            found = torch.zeros(n, dtype=torch.bool, device=dev)
            previous = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)
            active = torch.arange(n, device=dev)
            for step in range(self.steps):
                whole = active.numel() == n
                d = delta if whole else delta[active]
                x0 = x if whole else x[active]
                tw = torch.tanh((w0 if whole else w0[active]) + d)
                xa = (x0 + b * (tw - (t0 if whole else t0[active]))).clamp(lo_b, hi_b)
                logits, term, g = value_and_grad(model, xa, objective, None if whole else active)
                queries[active] += 1
                if clean is None:
                    clean = logits  # delta = 0: the first forward pass is at x
                with torch.no_grad():
                    sq = (xa - x0).flatten(1).double().pow(2).sum(1)
                    ok = task.success(logits, active) & (margin(logits, None if whole else active) >= kappa)
                    found[active] |= ok
                    best.offer(model, task, active, xa, sq.sqrt(), ok, logits)
                    if abort and step % check_every == 0:  # stop the inputs whose objective stalled for a tenth
                        loss = sq + term.double()
                        stalled = loss > 0.9999 * previous[active]
                        previous[active] = loss
                        if bool(stalled.any()):
                            keep = ~stalled
                            active, d, xa, x0, g, tw = (active[keep], d[keep], xa[keep], x0[keep], g[keep],
                                                        tw[keep])
                            whole = False
                            if active.numel() == 0:
                                break
                    # Adam on delta; the gradient of ||x' - x||^2 + c f(x') through x' = x + b (tanh(w) - t0)
                    grad = (2 * (xa - x0) + g) * (b * (1 - tw * tw))
                    k = step + 1
                    mi = _BETA1 * (m if whole else m[active]) + (1 - _BETA1) * grad
                    vi = _BETA2 * (v if whole else v[active]) + (1 - _BETA2) * grad * grad
                    moved = d - self.lr * (mi / (1 - _BETA1**k)) / ((vi / (1 - _BETA2**k)).sqrt() + _ADAM_EPS)
                    if whole:
                        m, v, delta = mi, vi, moved
                    else:
                        m[active], v[active], delta[active] = mi, vi, moved
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        return Outcome(best.x, queries + best.queries, logits_adv=None if task.randomized else best.logits,
                       logits_clean=clean)
