"""JSMA, the Jacobian-based saliency map attack (Papernot et al. 2016, https://arxiv.org/abs/1511.07528).

An L0 attack: it changes few input features, each by a lot. Every step computes the forward derivative
(the Jacobian of the model's logits, or of its softmax, with respect to the input) and from it, for the
target class ``t``,

* ``alpha_i = dF_t / dx_i`` (how feature ``i`` moves the target score) and
* ``beta_i = sum_{c != t} dF_c / dx_i`` (how it moves all the other scores).

The paper's pairwise rule (its Algorithm 3) then picks, among the features still in the search domain, the
pair ``(p, q)`` that maximizes ``(alpha_p + alpha_q) * |beta_p + beta_q|`` subject to
``alpha_p + alpha_q > 0`` and ``beta_p + beta_q < 0``: both features together raise the target and lower the
rest. Both are changed by ``theta`` (clipped to the bounds; with ``theta=1`` on [0, 1] pixels they are set
to 1), and features that reach the bound are removed from the search domain. A sample stops when it is
classified as the target, when its budget of ``floor(gamma * n_features)`` changed features cannot take
another step, or when no valid pair is left. With ``pairs=False`` the single-feature map
``S+(x_i, t) = alpha_i * |beta_i|`` (zero unless ``alpha_i > 0`` and ``beta_i < 0``) picks one feature a step.
The ``"decrease"`` variant (the paper's ``S-`` map, ``theta = -1``) pushes features down toward the lower
bound instead, so it looks for ``alpha < 0`` and ``beta > 0``.

Untargeted calls stop at the first misclassification. With ``untargeted="runner-up"`` (default) every
step attacks the most promising wrong class, the one with the highest current score other than the true
label. With ``untargeted="away"`` every step uses the true class's own saliency map with the roles
swapped: it picks the features whose change lowers the true class's score and raises the others' sum
(``alpha_y < 0`` and ``beta_y > 0`` for the increase variant), which finds misclassifications with fewer
changed features on logits (see ``benchmarks/jsma.py``).

Implementation. A whole batch advances in lock-step; samples that finish are dropped from the active set
and never change again. The Jacobian needs one forward and at most two backward passes per step, not one
per class: ``alpha`` is the gradient of the target score and ``beta`` is the gradient of the sum of all
scores minus ``alpha`` (for softmax outputs the sum is constant, so ``beta = -alpha``). The pair search is
exact and runs on tensors (:func:`best_pairs`). A feature that two other features beat on both ``alpha`` and
``-beta`` can always be swapped out of a pair without lowering its score, so only about the first two Pareto
layers of the points ``(alpha_i, -beta_i)`` are candidates (one sort and running maxima; we measured 5 to
16 of 784 on MNIST and 26 of 150,528 on a random 3x224x224 input). Their pairs are scored in chunks
``(samples, rows, candidates)`` capped by ``chunk_elements``, in decreasing order of an upper bound, until
the bound cannot beat the best pair found. Memory is therefore bounded whatever the input size; time is
quadratic in the candidates only in the degenerate case where most features lie on one Pareto front.

Large inputs. The paper's budget is a share of the features, and every step changes two of them: on a
3x224x224 image (150,528 features) the default ``gamma=0.145`` allows 10,913 steps and even a 1% budget 752,
each a forward and (on logits) two backward passes of the model. Three options make such inputs practical
(:meth:`JSMA.large_input` sets them together):

* ``max_features``: the budget as a number of changed features instead of a fraction (``gamma``).
* ``per_step=m``: ``m`` disjoint pairs per Jacobian, chosen greedily (the best pair, then the best pair of
  the remaining features, ...), so the budget is spent in ``m`` times fewer steps. The paper recomputes the
  Jacobian after every pair, so each pair it picks accounts for the change of the previous ones; the greedy
  picks of one step do not (two pixels that each raise the target may do less together), and the last step
  may change up to ``2 (m - 1)`` features more than the paper's stop at the first success would.
* ``candidates=k``: the pair search is restricted to the ``k`` features with the largest upper bound
  ``relu(alpha_p + max alpha) * relu(-beta_p - min beta)`` on the score of any pair containing ``p``
  (see :func:`greedy_pairs`). The paper searches every pair of the domain. The restricted search finds the
  paper's pair whenever that pair scores at least the largest bound left out (it then beats every pair
  with a feature outside). It can miss the paper's pair when one of its features ranks below ``k``: typically
  a pair of two specialists, one with a large ``alpha`` and one with a large ``-beta`` (each weak in the
  other), where features moderate in both rank above one of them (the bound adds the best ``alpha`` and the
  best ``-beta`` of the whole domain to each feature's own). It bounds the cost of the greedy search of
  ``m`` pairs to one table of ``k (k - 1) / 2`` pair scores per step, where the exact search would run
  ``m`` times over all features.

``benchmarks/scale_memory.py`` measures this mode on a ResNet-18 at 3x224x224.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from bastion._checks import shown
from bastion._model import chunk_size, evaluations_per_input
from bastion.attacks._layout import channels_last_forward
from bastion.attacks.base import Attack, Outcome, Task, check_int, check_positive, choice, flag, whole
from bastion.errors import ConfigError
from bastion.threat import ThreatModel, perturbation_norms

__all__ = ["JSMA", "L0Budget", "L0Count", "L0Fraction", "best_features", "best_pairs", "best_pairs_opposed", "greedy_pairs",
           "greedy_pairs_opposed", "max_changed_features", "top_features"]


def max_changed_features(gamma: float, n_features: int) -> int:
    """``floor(gamma * n_features)``, robust to float rounding (``0.29 * 100`` gives 29, not 28)."""
    return int(math.floor(gamma * n_features + 1e-9))


@dataclass(frozen=True, kw_only=True)
class L0Budget(ThreatModel):
    """An L0 ball: at most :meth:`budget` features differ from the original (a feature counts as changed when it
    moves by more than 1e-7, as in :func:`~bastion.threat.perturbation_norms`). The base of :class:`L0Fraction`
    and :class:`L0Count`, which say how ``eps`` gives the budget."""

    norm: Literal["l0"] = "l0"  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm != "l0":
            raise ConfigError(f"{type(self).__name__} is an l0 threat model, got norm={shown(self.norm)}")

    def budget(self, n_features: int) -> int:
        """The largest number of features that may change in an input of ``n_features`` features."""
        raise NotImplementedError

    def contains(self, x_adv: Tensor, x: Tensor, *, atol: float | None = None) -> Tensor:
        """Per-sample bool: at most :meth:`budget` features changed, and inside the bounds (``+atol``,
        default 1e-6)."""
        lo, hi = self.bounds
        atol = 1e-6 if atol is None else atol
        flat = x_adv.reshape(x_adv.shape[0], -1)
        in_box = (flat >= lo - atol).all(1) & (flat <= hi + atol).all(1)
        return in_box & (perturbation_norms(x_adv, x)["l0"] <= self.budget(x[0].numel()))


@dataclass(frozen=True, kw_only=True)
class L0Fraction(L0Budget):
    """An L0 ball whose radius ``eps`` is a fraction of the input's features: at most ``floor(eps *
    n_features)`` features change. :meth:`distance` is the fraction of changed features, so ``distance <= eps``
    and :meth:`contains` agree exactly.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.eps <= 1.0:
            raise ConfigError(f"the l0 fraction eps must be in (0, 1], got {shown(self.eps)}")

    def budget(self, n_features: int) -> int:
        return max_changed_features(self.eps, n_features)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample fraction of changed features, shape (B,)."""
        return perturbation_norms(x_adv, x)["l0"] / x[0].numel()


@dataclass(frozen=True, kw_only=True)
class L0Count(L0Budget):
    """An L0 ball whose radius ``eps`` is a number of features: at most ``eps`` features change.
    :meth:`distance` is the number of changed features."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.eps, int) or float(self.eps).is_integer()) or self.eps < 1:
            raise ConfigError(f"the l0 count eps must be a whole number >= 1, got {shown(self.eps)}")

    def budget(self, n_features: int) -> int:
        return min(int(self.eps), n_features)


@dataclass(frozen=True, kw_only=True)
class JSMA(Attack):
    """The Jacobian saliency map attack, batched.

    Args:
        theta: how much a chosen feature changes per step (> 0; the direction comes from ``variant``).
            The paper's ``theta=1`` on [0, 1] pixels sets chosen features to the bound.
        gamma: the largest fraction of features that may change, in (0, 1]; the paper's 0.145 is 14.5%.
            At most ``floor(gamma * n_features)`` features change.
        max_features: the largest number of features that may change (a whole number >= 1); when set it
            replaces ``gamma`` (a budget in pixels: one feature is one channel of one pixel, so a 3x224x224
            image has 150,528). The threat model is then :class:`L0Count`.
        per_step: pairs (single features with ``pairs=False``) changed per step, that is per Jacobian
            evaluation; 1 (default) is the paper's algorithm. ``m > 1`` takes ``m`` disjoint pairs greedily from
            one Jacobian: about ``m`` times fewer passes, at a price ("Large inputs" in the module docstring).
        candidates: search pairs only among this many features, the ones with the largest saliency bound
            (default None: every feature of the search domain, the paper's exhaustive search). See "Large
            inputs" in the module docstring for what it can miss. Ignored for single features and for
            ``output="probs"``, where the search is exact and linear anyway.
        pairs: use the paper's pairwise search (default); False picks one feature a step with ``S+``.
        variant: ``"increase"`` pushes features toward the upper bound (the paper's ``S+``, theta > 0),
            ``"decrease"`` toward the lower bound (``S-``, theta < 0).
        output: differentiate the softmax ``"probs"`` (default; the paper's forward derivative of the network's
            output, as CleverHans computed it; "JSMA-F" in Carlini & Wagner 2017) or the ``"logits"``
            ("JSMA-Z"). On three MNIST models (bastion's ``mnist-cnn``, the same architecture trained with
            another seed, and ``logreg``) the softmax variant succeeds more often with fewer changed pixels
            than the logits one and than ART's (``benchmarks/jsma.py``), and it needs one backward pass a step
            instead of two.
        untargeted: the rule for untargeted calls, ``"runner-up"`` or ``"away"`` (see the module docstring).
        bounds: the valid input range.
        chunk_elements: the most candidate pairs scored at once (summed over the batch); bounds the
            memory of the pair search to about ``12 * chunk_elements`` bytes (float32).
        jacobian_batch: samples per forward/backward pass (results do not depend on it). None: on CPU,
            as many as make about 131,072 input features (167 MNIST images; large CPU batches run slower
            per sample once activations leave the cache; one 3x224x224 image), elsewhere as many as make
            :data:`bastion._model.GRAD_CHUNK_FEATURES` (bounded memory); features are counted once per
            evaluation of the network (``eot(model, n)`` evaluates each input ``n`` times).
        channels_last: on CPU, evaluate a convolutional model through channels-last copies of its kernels
            (oneDNN's faster layout: on ``mnist-cnn`` about 5-10% off the attack's time; the model itself is
            not touched, see :mod:`bastion.attacks._layout`). The outputs agree with the model's own up to
            float rounding, so a near-tie between candidate pairs can resolve differently. False: call the
            model as it is.

    Shape:
        x: (B, C, H, W) or (B, D); any number of features (a 3x224x224 input works: the pair search is
        chunked and pruned, and :meth:`large_input` makes its budget practical).

    Example:
        >>> from bastion.attacks.jsma import JSMA
        >>> atk = JSMA(theta=1.0, gamma=0.145)
        >>> atk.threat.budget(28 * 28)
        113
        >>> res = atk(model, x, y, target=t)          # doctest: +SKIP
        >>> res.norms["l0"].max() <= 113              # doctest: +SKIP
        >>> big = JSMA.large_input(1505)              # 1% of a 3x224x224 image, in about 50 steps
        >>> big.per_step, big.candidates
        (16, 1024)
    """

    name: ClassVar[str] = "jsma"
    theta: float = 1.0
    gamma: float = 0.145
    max_features: int | None = whole(None, optional=True)
    per_step: int = whole(1)
    candidates: int | None = whole(None, minimum=2, optional=True)
    pairs: bool = flag(True)
    variant: Literal["increase", "decrease"] = choice("increase", ("increase", "decrease"))
    output: Literal["logits", "probs"] = choice("probs", ("logits", "probs"))
    untargeted: Literal["runner-up", "away"] = choice("runner-up", ("runner-up", "away"))
    bounds: tuple[float, float] = (0.0, 1.0)
    chunk_elements: int = whole(1 << 24)
    jacobian_batch: int | None = whole(None, optional=True)
    channels_last: bool = flag(True)

    def _check(self) -> None:
        if isinstance(self.theta, (int, float)) and not isinstance(self.theta, bool) and self.theta < 0:
            raise ConfigError(f"theta must be > 0, got {shown(self.theta)}; use variant='decrease' to push features down")
        check_positive("theta", self.theta)
        if not isinstance(self.gamma, (int, float)) or isinstance(self.gamma, bool) or not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"gamma (the fraction of features that may change) must be in (0, 1], got {shown(self.gamma)}")

    @classmethod
    def large_input(cls, max_features: int, *, steps: int = 50, candidates: int = 1024, **options: Any) -> JSMA:
        """JSMA for large inputs (ImageNet-size images): at most ``max_features`` changed features, spent in
        about ``steps`` Jacobian evaluations (each step changes ``ceil(max_features / (2 steps))`` pairs, or
        ``ceil(max_features / steps)`` single features with ``pairs=False``), pairs searched among the
        ``candidates`` most salient features. Other options as for :class:`JSMA`; see "Large inputs" in the
        module docstring (a 1% budget of a 3x224x224 input in about 50 Jacobian evaluations instead of 752)."""
        check_int("max_features", max_features, minimum=1)
        check_int("steps", steps, minimum=1)
        width = 2 if options.get("pairs", True) else 1
        per_step = max(1, math.ceil(max_features / (width * steps)))
        return cls(max_features=max_features, per_step=per_step, candidates=candidates, **options)

    @property
    def threat(self) -> L0Budget:
        if self.max_features is not None:
            return L0Count(eps=self.max_features, bounds=self.bounds)
        return L0Fraction(eps=self.gamma, bounds=self.bounds)

    def _run(self, model: nn.Module, task: Task) -> Outcome:
        x, y, target = task.x, task.y, task.target
        b, shape = x.shape[0], x.shape[1:]
        n = x[0].numel()
        lo, hi = self.bounds
        up = self.variant == "increase"
        sign = 1.0 if up else -1.0
        width = 2 if self.pairs else 1  # features changed by one pick
        away = target is None and self.untargeted == "away"
        budget = self.threat.budget(n)
        if self.jacobian_batch is not None:
            micro = self.jacobian_batch
        else:
            per_pass = _CPU_JACOBIAN_FEATURES if x.device.type == "cpu" else None  # None: GRAD_CHUNK_FEATURES
            micro = chunk_size(x, per_pass, per_sample=evaluations_per_input(model))

        forward = channels_last_forward(model, x) if self.channels_last else model
        x0 = x.reshape(b, n)
        xf = x0.clone()
        domain = xf < hi if up else xf > lo  # features that can still move in the chosen direction
        n_changed = torch.zeros(b, dtype=torch.int64, device=x.device)
        queries = torch.zeros(b, dtype=torch.int64, device=x.device)
        active = torch.arange(b, device=x.device)
        # the outputs at each sample's current point, where the last step computed them (NaN once it moves):
        # returned so that the final evaluation only repeats the samples that moved after their last one
        final = torch.full((b, task.num_classes), float("nan"), dtype=x.dtype, device=x.device)
        clean: Tensor | None = None  # the first step's forward pass is at x: the clean outputs

        while active.numel():
            # Budget and domain first: a sample that cannot take another full pick is finished. Each pick
            # changes at most ``width`` more features, so ``picks`` keeps every sample within its budget.
            picks = torch.minimum(budget - n_changed[active], domain[active].sum(1)) // width
            room = picks >= 1
            active, picks = active[room], picks[room]
            if active.numel() == 0:
                break
            t = y[active] if away else (None if target is None else target[active])
            logits, alpha, beta = _target_gradients(forward, xf[active].reshape(-1, *shape), y[active], t,
                                                    probs=self.output == "probs", micro=micro)
            queries[active] += 1
            if clean is None and active.numel() == b:
                clean = logits
            final[active] = logits.to(final.dtype)
            pred = logits.argmax(1)
            done = pred != y[active] if target is None else pred == t
            keep = ~done
            active, alpha, beta, picks = active[keep], alpha[keep], beta[keep], picks[keep]
            if active.numel() == 0:
                break
            # away from the true class: lower its score, raise the others' (the saliency map reversed)
            direction = -sign if away else sign
            a = direction * alpha.reshape(active.numel(), n)
            c = direction * beta.reshape(active.numel(), n)
            chosen, valid = self._select(a, c, domain[active], picks.clamp(max=self.per_step))
            found = valid[:, 0]  # picks are made in order: none when the first one fails
            active, chosen, valid = active[found], chosen[found], valid[found]
            if active.numel() == 0:
                break
            rows = active[:, None, None].expand_as(chosen)[valid]  # (picks, width)
            cols = chosen[valid]
            moved = (xf[rows, cols] + sign * self.theta).clamp(lo, hi)
            xf[rows, cols] = moved
            domain[rows, cols] = moved < hi if up else moved > lo
            n_changed[active] = (xf[active] != x0[active]).sum(1)
            final[active] = float("nan")
        return Outcome(xf.reshape(x.shape), queries, logits_adv=final, logits_clean=clean)

    def _select(self, a: Tensor, c: Tensor, dom: Tensor, picks: Tensor) -> tuple[Tensor, Tensor]:
        """This step's picks: ``(chosen, valid)``, ``chosen`` (B, m, width) feature indices and ``valid``
        (B, m) bool, where ``m`` is the most picks any row may make and row ``i`` makes at most ``picks[i]``
        (the paper's single pick when ``per_step`` is 1)."""
        m = int(picks.max())
        if not self.pairs:
            if m == 1:
                p, found = best_features(a, c, dom)
                return p[:, None, None], found[:, None]
            p, ok = top_features(a, c, dom, m)
            chosen, valid = p[:, :, None], ok
        elif self.output == "probs":  # beta = -alpha: the best pairs are the top alphas, two by two
            chosen, valid = greedy_pairs_opposed(a, dom, m)
        elif self.candidates is None and m == 1:
            p, q, found = best_pairs(a, c, dom, self.chunk_elements)
            return torch.stack((p, q), 1)[:, None], found[:, None]
        else:
            chosen, valid = greedy_pairs(a, c, dom, m, candidates=self.candidates, chunk_elements=self.chunk_elements)
        within = torch.arange(chosen.shape[1], device=a.device)[None] < picks[:, None]
        return chosen, valid & within


#: default input features per forward/backward pass on CPU (see ``JSMA.jacobian_batch``)
_CPU_JACOBIAN_FEATURES = 1 << 17


def _target_gradients(
    model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, target: Tensor | None, *, probs: bool, micro: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass and the two Jacobian summaries, ``micro`` samples at a time.

    Returns ``(logits, alpha, beta)``: ``alpha = dF_t/dx`` and ``beta = sum_{c != t} dF_c/dx`` (shaped like
    ``x``), where ``F`` is the logits or the softmax and ``t`` the target (untargeted: the highest-scoring
    class other than ``y`` at ``x``).
    """
    if micro is None or x.shape[0] <= micro:
        return _target_gradients_once(model, x, y, target, probs=probs)
    alpha, beta = torch.empty_like(x), torch.empty_like(x)
    logits = []
    for i in range(0, x.shape[0], micro):
        sl = slice(i, i + micro)
        part = _target_gradients_once(model, x[sl], y[sl], None if target is None else target[sl], probs=probs)
        logits.append(part[0])
        alpha[sl], beta[sl] = part[1], part[2]
    return torch.cat(logits), alpha, beta


def _target_gradients_once(
    model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, target: Tensor | None, *, probs: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_target_gradients` on one chunk."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        scores = logits.softmax(1) if probs else logits
        if target is None:
            target = logits.detach().scatter(1, y[:, None], float("-inf")).argmax(1)
        onehot = torch.zeros_like(scores).scatter_(1, target[:, None], 1.0)
        if not scores.requires_grad:  # the output does not depend on x differentiably (masked gradients)
            zero = torch.zeros_like(xg)
            return logits.detach(), zero, zero
        if probs:  # the softmax sums to one: the other classes' gradients sum to -alpha exactly
            alpha = _grad(scores, xg, onehot)
            beta = -alpha
        else:
            alpha = _grad(scores, xg, onehot, retain_graph=True)
            total = _grad(scores, xg, torch.ones_like(scores))
            beta = total.sub_(alpha)
    return logits.detach(), alpha.detach(), beta.detach()


def _grad(scores: Tensor, x: Tensor, weights: Tensor, *, retain_graph: bool = False) -> Tensor:
    """``d (weights . scores) / dx`` (zeros where the graph does not reach ``x``)."""
    (g,) = torch.autograd.grad(scores, x, grad_outputs=weights, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def best_features(a: Tensor, b: Tensor, domain: Tensor) -> tuple[Tensor, Tensor]:
    """The single-feature saliency map: per row, ``argmax_i a_i * |b_i|`` over ``domain`` with ``a_i > 0``
    and ``b_i < 0``.

    Shape:
        a, b, domain: (B, N). Returns ``(p, found)``, each (B,); ``found`` is False where no feature is valid.
    """
    valid = domain & (a > 0) & (b < 0)
    score = torch.where(valid, -(a * b), torch.zeros((), dtype=a.dtype, device=a.device))
    best, p = score.max(1)
    return p, best > 0


def best_pairs_opposed(a: Tensor, domain: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`best_pairs` for ``b = -a`` (softmax outputs, whose class scores sum to one).

    The pair score is then ``(a_p + a_q) ** 2`` under ``a_p + a_q > 0``, largest for the two largest ``a``
    of the domain: one ``topk`` per row instead of the pair search (same pair, up to ties).

    Shape:
        a, domain: (B, N), at least two domain features per row. Returns ``(p, q, found)``, each (B,).
    """
    top, idx = a.masked_fill(~domain, float("-inf")).topk(2, dim=1)
    return idx[:, 0], idx[:, 1], top.sum(1) > 0


def top_features(a: Tensor, b: Tensor, domain: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """The ``m`` best single features per row by the saliency map ``a_i * |b_i|`` (``a_i > 0``, ``b_i < 0``,
    in ``domain``), best first: the greedy extension of :func:`best_features` (the map of one feature does
    not depend on the others, so greedy is exact here).

    Shape:
        a, b, domain: (B, N). Returns ``(p, found)``, each (B, min(m, N)).
    """
    valid = domain & (a > 0) & (b < 0)
    score = torch.where(valid, -(a * b), torch.zeros((), dtype=a.dtype, device=a.device))
    best, p = score.topk(min(m, a.shape[1]), dim=1)
    return p, best > 0


def greedy_pairs_opposed(a: Tensor, domain: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """:func:`greedy_pairs` for ``b = -a`` (softmax outputs): the pair score ``(a_p + a_q) ** 2`` makes the
    best ``m`` disjoint pairs the top ``2 m`` values of ``a``, two by two.

    Shape:
        a, domain: (B, N). Returns ``(pairs, found)``: (B, m', 2) and (B, m') with ``m' = min(m, N // 2)``.
    """
    m = min(m, a.shape[1] // 2)
    top, idx = a.masked_fill(~domain, float("-inf")).topk(2 * m, dim=1)
    pairs = idx.reshape(a.shape[0], m, 2)
    return pairs, top.reshape(a.shape[0], m, 2).sum(2) > 0


def greedy_pairs(
    a: Tensor, b: Tensor, domain: Tensor, m: int, *, candidates: int | None = None, chunk_elements: int = 1 << 24,
) -> tuple[Tensor, Tensor]:
    """Up to ``m`` disjoint pairs per row, chosen greedily: the best pair of the paper's rule (see
    :func:`best_pairs`), then the best pair among the remaining features, and so on.

    ``candidates=None``: every pick is the exact best pair of the remaining domain (``m`` exact searches).
    ``candidates=k``: all ``k (k - 1) / 2`` pairs of the ``k`` domain features with the largest upper bound are
    scored once (in chunks of rows of at most ``chunk_elements`` scores) and the picks are taken from that
    table (the bound, and what it can miss: "Large inputs" in the module docstring).

    Shape:
        a, b, domain: (B, N). Returns ``(pairs, found)``: (B, m, 2) feature indices and (B, m) bool; picks
        are made in order, so ``found`` is False from the first pick that finds no valid pair on.
    """
    nb, n = a.shape
    dev = a.device
    if candidates is None:
        dom = domain.clone()
        rows = torch.arange(nb, device=dev)
        picked: list[Tensor] = []
        hits: list[Tensor] = []
        for _ in range(m):
            p, q, ok = best_pairs(a, b, dom, chunk_elements)
            dom[rows[ok], p[ok]] = False
            dom[rows[ok], q[ok]] = False
            picked.append(torch.stack((p, q), 1))
            hits.append(ok)
        return torch.stack(picked, 1), torch.stack(hits, 1)
    k = min(candidates, n)
    am, bm, bound = _pair_bound(a, b, domain)
    # in feature order, so that ties between pairs resolve as in the exhaustive search (the first pair wins)
    feats = bound.topk(k, dim=1).indices.sort(1).values  # (B, k)
    ac, bc, dc = am.gather(1, feats), bm.gather(1, feats), domain.gather(1, feats)
    pairs = torch.zeros(nb, m, 2, dtype=torch.int64, device=dev)
    found = torch.zeros(nb, m, dtype=torch.bool, device=dev)
    upper = torch.ones(k, k, dtype=torch.bool, device=dev).triu(1)
    step = max(1, chunk_elements // (k * k))
    for s in range(0, nb, step):
        sa = ac[s : s + step, :, None] + ac[s : s + step, None, :]  # (rows, k, k)
        sb = bc[s : s + step, :, None] + bc[s : s + step, None, :]
        ok = (sa > 0) & (sb < 0) & upper & dc[s : s + step, :, None] & dc[s : s + step, None, :]
        score = sa.mul_(sb).neg_().masked_fill_(~ok, 0)
        r = torch.arange(score.shape[0], device=dev)
        for j in range(m):
            flat = score.reshape(score.shape[0], -1).argmax(1)  # the first of equal scores
            val = score.reshape(score.shape[0], -1).gather(1, flat[:, None]).squeeze(1)
            hit = val > 0
            i, jj = flat // k, flat % k
            pairs[s : s + step, j, 0] = feats[s : s + step].gather(1, i[:, None]).squeeze(1)
            pairs[s : s + step, j, 1] = feats[s : s + step].gather(1, jj[:, None]).squeeze(1)
            found[s : s + step, j] = hit
            if not bool(hit.any()):
                break
            for f in (i, jj):  # both features leave the table: rows and columns
                score[r, f, :] = 0
                score[r, :, f] = 0
    return pairs, found


def best_pairs(
    a: Tensor, b: Tensor, domain: Tensor, chunk_elements: int = 1 << 24, *, reduce: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's pairwise search, exact, vectorized over rows and memory-bounded.

    Per row, the pair ``p != q`` of ``domain`` features maximizing ``(a_p + a_q) * -(b_p + b_q)`` subject to
    ``a_p + a_q > 0`` and ``b_p + b_q < 0``.

    Two exact reductions keep this far below ``n^2 / 2`` scored pairs (see "Implementation" in the module
    docstring): with ``reduce``, only the features :func:`_two_layer_candidates` keeps are candidates; they are
    scanned by :func:`_scan_pairs` in bound order, in chunks.

    Shape:
        a, b, domain: (B, N). Returns ``(p, q, found)``, each (B,); ``found`` is False where no pair is valid.
    """
    nb = a.shape[0]
    dev = a.device
    if reduce:
        keep = _two_layer_candidates(a, -b, domain)
        count = keep.sum(1)
        c = int(count.max()) if nb else 0
        if c < 2:
            zero = torch.zeros(nb, dtype=torch.int64, device=dev)
            return zero, zero, torch.zeros(nb, dtype=torch.bool, device=dev)
        # the candidates of each row first, in feature order (padded with non-candidates)
        n = a.shape[1]
        rank = keep * torch.arange(n, 0, -1, device=dev)
        feats = rank.topk(c, dim=1).indices
        p, q, found = _scan_pairs(a.gather(1, feats), b.gather(1, feats), keep.gather(1, feats), chunk_elements)
        return feats.gather(1, p[:, None]).squeeze(1), feats.gather(1, q[:, None]).squeeze(1), found
    return _scan_pairs(a, b, domain, chunk_elements)


def _pair_bound(a: Tensor, b: Tensor, domain: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``a`` and ``b`` set to -inf and +inf outside ``domain``, and each feature's upper bound ``relu(a_p + max a) *
    relu(-b_p - min b)`` on the score of any pair containing it (maxima over the domain; 0 outside it)."""
    a = a.masked_fill(~domain, float("-inf"))
    b = b.masked_fill(~domain, float("inf"))
    bound = (a + a.amax(1, keepdim=True)).clamp_min(0) * (-(b + b.amin(1, keepdim=True))).clamp_min(0)
    return a, b, bound.masked_fill(~domain, 0).nan_to_num_(nan=0.0)


def _exclusive_cummax(t: Tensor) -> Tensor:
    """``out[:, i] = max(t[:, :i])`` (``-inf`` for ``i = 0``)."""
    head = torch.full_like(t[:, :1], float("-inf"))
    return torch.cat((head, t.cummax(1).values[:, :-1]), 1)


def _two_layer_candidates(u: Tensor, v: Tensor, domain: Tensor) -> Tensor:
    """bool (B, N): the domain features that are NOT weakly dominated (``u' >= u`` and ``v' >= v``) by two
    domain features placed before them in one fixed order by decreasing ``u``.

    Every feature placed before ``i`` has ``u' >= u_i``, so ``i`` is dropped exactly when the second largest
    ``v`` among them is ``>= v_i``. (Dominating features tied in ``u`` and placed after ``i`` are ignored,
    which only keeps a few more candidates.) Swapping a dropped feature for one of its two dominators moves
    it earlier in the order, so repeated swaps end on a pair of kept features that scores at least as well.
    """
    ninf = float("-inf")
    u = u.masked_fill(~domain, ninf)
    v = v.masked_fill(~domain, ninf)
    order = u.argsort(dim=1, descending=True)
    vs = v.gather(1, order)
    first = _exclusive_cummax(vs)  # the largest v among earlier features
    record = vs > first
    # the second largest v among earlier features: the record before the latest one, or any non-record
    second = torch.maximum(
        _exclusive_cummax(torch.where(record, first, torch.full_like(vs, ninf))),
        _exclusive_cummax(torch.where(record, torch.full_like(vs, ninf), vs)),
    )
    keep_sorted = (vs > second) & domain.gather(1, order)
    return torch.zeros_like(domain).scatter_(1, order, keep_sorted)


def _scan_pairs(a: Tensor, b: Tensor, domain: Tensor, chunk_elements: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exhaustive pair scan in chunks, pruned by an upper bound.

    Features are visited in decreasing order of ``u_p = relu(a_p + max a) * relu(-b_p - min b)``, an upper
    bound of every pair containing ``p``; pair ``(i, j)`` (positions in that order, ``i < j``) is scored when
    row ``i`` is, so once ``u`` at the next row is at most the best score found, no unscored pair can win.
    Rows are scored in chunks of at most ``chunk_elements`` pair scores (over all rows still searching).
    """
    nb, n = a.shape
    dev, dtype = a.device, a.dtype
    a, b, bound = _pair_bound(a, b, domain)
    bound_s, order = bound.sort(1, descending=True)
    a_s, b_s = a.gather(1, order), b.gather(1, order)
    # Features with a zero bound have no valid partner at all: neither rows nor columns need them.
    n_useful = (bound_s > 0).sum(1)

    best = torch.zeros(nb, dtype=dtype, device=dev)
    best_i = torch.zeros(nb, dtype=torch.int64, device=dev)
    best_j = torch.zeros(nb, dtype=torch.int64, device=dev)
    k0 = 0
    while k0 < n - 1:
        need = (bound_s[:, k0] > best).nonzero().squeeze(1)
        if need.numel() == 0:
            break
        end = int(n_useful[need].max())  # columns past this have a zero bound
        ncols = end - k0 - 1
        if ncols <= 0:
            break
        rows = max(1, min(ncols, chunk_elements // (need.numel() * ncols)))
        ar, br = a_s[need, k0:k0 + rows], b_s[need, k0:k0 + rows]
        ac, bc = a_s[need, k0 + 1:end], b_s[need, k0 + 1:end]
        sa = ar[:, :, None] + ac[:, None, :]  # (samples, rows, cols)
        sb = br[:, :, None] + bc[:, None, :]
        invalid = (sa <= 0) | (sb >= 0)
        # column c (position k0+1+c) pairs with row r (position k0+r) only once: when c >= r
        invalid |= (torch.arange(ncols, device=dev)[None, :] < torch.arange(rows, device=dev)[:, None])[None]
        score = sa.mul_(sb).neg_().masked_fill_(invalid, 0)
        val, idx = score.reshape(need.numel(), -1).max(1)
        better = val > best[need]
        sel = need[better]
        best[sel] = val[better]
        best_i[sel] = k0 + idx[better] // ncols
        best_j[sel] = k0 + 1 + idx[better] % ncols
        k0 += rows
    p = order.gather(1, best_i[:, None]).squeeze(1)
    q = order.gather(1, best_j[:, None]).squeeze(1)
    return p, q, best > 0
