"""Noise injection: Gaussian, Poisson, salt, pepper, salt & pepper or speckle noise (BaRT group 4).

The noise models are scikit-image's ``random_noise`` ones (output clipped to [0, 1]):

* ``gaussian``: ``x + N(0, var)``; ``speckle``: ``x + x * N(0, var)``;
* ``poisson``: ``Poisson(x * v) / v`` with ``v = 2 ** ceil(log2(#distinct values of the image))``;
* ``salt`` / ``pepper`` / ``s&p``: each value is replaced, with probability ``amount``, by 1 (salt) or 0
  (pepper); for ``s&p`` a replaced value is salt with probability ``salt_vs_pepper``.

Every image carries a 62-bit seed, and its noise is a pure function of that seed and the pixel position
(the counter-based generator of :mod:`bastion._rng`): replaying the parameters replays the noise, and an
image gets the same noise in any batch. Poisson variates come from transformed rejection (rates >= 10) and
exact CDF inversion (regularised incomplete gamma) at keyed uniforms (:func:`sample_poisson`).
Gaussian, speckle and impulse noise are differentiable in the image (almost everywhere), Poisson sampling
is not: the group declares ``grad = "approx"`` and its surrogate passes the gradient straight through the
Poisson kind (``x + stop_gradient(noisy - x)``).
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._rng import keyed_uniform
from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_choices, check_range, expect
from bastion.defenses.bart.functional import dispatch, per_sample, sort_rows

KINDS = ("gaussian", "poisson", "salt", "pepper", "s&p", "speckle")
_SEED = 0x6E6F697365  # stream key of this group's noise


@dataclass(frozen=True)
class NoiseParams(Params):
    """Per image: ``kind`` (index into :data:`KINDS`), ``var`` (gaussian/speckle variance), ``amount`` and
    ``salt_vs_pepper`` (impulse noise), ``seed`` (the noise's key)."""

    kind: Tensor
    var: Tensor
    amount: Tensor
    salt_vs_pepper: Tensor
    seed: Tensor


def _normal(x: Tensor, seed: Tensor, stream: int) -> Tensor:
    """Standard normal noise keyed by ``seed``: inverse CDF of one keyed uniform stream (half the hashing of
    Box-Muller; the 24-bit uniforms cap values at about 5.3 sigma)."""
    u = keyed_uniform(seed.to(x.device), tuple(x.shape[1:]), seed=_SEED, stream=stream, dtype=x.dtype)
    return math.sqrt(2.0) * torch.erfinv((2.0 * u - 1.0).clamp(-1.0 + 2.0**-23, 1.0 - 2.0**-23))


def _uniform(x: Tensor, seed: Tensor, stream: int) -> Tensor:
    return keyed_uniform(seed.to(x.device), tuple(x.shape[1:]), seed=_SEED, stream=stream, dtype=torch.float64)


def distinct_counts(x: Tensor) -> Tensor:
    """(N,) number of distinct values of each image."""
    s = sort_rows(x.detach().reshape(x.shape[0], -1))
    return 1 + (s[:, 1:] != s[:, :-1]).sum(1)


def poisson_from_uniform(lam: Tensor, u: Tensor) -> Tensor:
    """Poisson(``lam``) variates by exact inversion of the uniforms ``u`` (same shape; float64 inside).

    Starts from the Cornish-Fisher approximation of the quantile and steps to the smallest ``k`` with
    ``P(X <= k) >= u``, the CDF being the regularised upper incomplete gamma ``Q(k + 1, lam)``; after the
    first pass only the few values whose guess was off are revisited.
    """
    lam = lam.to(torch.float64)
    u = u.to(torch.float64)
    z = math.sqrt(2.0) * torch.erfinv((2.0 * u - 1.0).clamp(-1 + 1e-15, 1 - 1e-15))
    k = torch.floor(lam + torch.sqrt(lam) * z + (z * z - 1.0) / 6.0 + 0.5).clamp(min=0)
    kf, lf, uf = k.reshape(-1), lam.reshape(-1), u.reshape(-1)  # kf: k's storage, updated in place
    idx = torch.arange(kf.numel(), device=k.device)
    step = torch.zeros(0, dtype=kf.dtype, device=kf.device)
    walks = 0
    while idx.numel():
        if walks < 4 or idx.numel() > 64:  # every value one step at a time
            step = _poisson_step(kf[idx], lf[idx], uf[idx])
            moved = (step != 0).nonzero().squeeze(1)
            idx, step = idx[moved], step[moved]
            kf.index_put_((idx,), kf[idx] + step)
        else:  # the few values still walking (a guess far off): the next `block` steps of each walk at once
            block = 16 << min(walks - 4, 9)
            j = torch.arange(block, dtype=kf.dtype, device=kf.device)
            kk = kf[idx, None] + step[:, None] * j
            s = _poisson_step(kk, lf[idx, None].expand_as(kk), uf[idx, None].expand_as(kk))
            off = s != step[:, None]  # where each walk stops (or would turn)
            ends = off.any(1)
            first = off.to(torch.uint8).argmax(1).to(kf.dtype)
            kf.index_put_((idx,), kf[idx] + step * torch.where(ends, first, torch.full_like(first, block)))
            idx, step = idx[~ends], step[~ends]
        walks += 1
    return kf.reshape(k.shape)


#: rates from which Poisson variates come from transformed rejection (PTRS) rather than CDF inversion
_PTRS_MIN = 10.0
#: PTRS rounds (two keyed uniform streams each) before the rare rejected values fall back to inversion
_PTRS_ROUNDS = 2
#: values per block of a PTRS round
_BLOCK = 1 << 15


def sample_poisson(lam: Tensor, uniform: Callable[[int], Tensor]) -> Tensor:
    """Exact Poisson(``lam``) variates (float64, ``lam``'s shape) from the uniform streams ``uniform(s)``
    (``s`` = 0, 1, ...; each a tensor of uniforms in [0, 1) shaped like ``lam``; a stream is only drawn when
    needed, so keyed streams replay exactly).

    Rates of at least 10 use Hörmann's transformed rejection with squeeze (PTRS, 1993, NumPy's method) for
    ``_PTRS_ROUNDS`` rounds of two streams each; smaller rates and the values rejected in every round are
    inverted exactly (:func:`poisson_from_uniform` on stream 0, several times slower at a colour image's rates).
    Every accepted value is Poisson(``lam``) distributed, so the mixture is too.
    """
    lam = lam.to(torch.float64)
    flat = lam.reshape(-1)
    k = torch.zeros_like(flat)
    is_big = flat >= _PTRS_MIN
    invert = ((flat > 0) & ~is_big).nonzero().squeeze(1)  # Poisson(0) is 0: nothing to draw
    left = _ptrs(flat, is_big, k, uniform)
    invert = torch.cat((invert, left))
    if invert.numel():
        k[invert] = poisson_from_uniform(flat[invert], uniform(0).reshape(-1)[invert])
    return k.view(lam.shape)


def _ptrs(flat: Tensor, todo: Tensor, k: Tensor, uniform: Callable[[int], Tensor]) -> Tensor:
    """PTRS rounds for the rates ``flat`` where ``todo`` (a mask of rates >= 10, cleared in place as values are
    accepted), writing the accepted variates into ``k``; returns the positions no round accepted. Rounds run in
    cache-sized blocks of ``_BLOCK`` values: masked over all values while most are left, else gathered."""
    m = flat.numel()
    left = None  # positions still to draw, once they are few
    for r in range(_PTRS_ROUNDS):
        count = int(todo.sum()) if left is None else left.numel()
        if count == 0:
            return torch.zeros(0, dtype=torch.int64, device=flat.device)
        u_all = uniform(1 + 2 * r).reshape(-1)
        v_all = uniform(2 + 2 * r).reshape(-1)
        if left is None and 4 * count >= m:  # dense: every value, masked
            for s0 in range(0, m, _BLOCK):
                sl = slice(s0, s0 + _BLOCK)
                kk, ok = _ptrs_attempt(flat[sl], u_all[sl], v_all[sl], todo[sl])
                k[sl] = torch.where(ok, kk, k[sl])
                todo[sl] &= ~ok
            continue
        if left is None:
            left = todo.nonzero().squeeze(1)
        ok_all = torch.empty(left.numel(), dtype=torch.bool, device=flat.device)
        for s0 in range(0, left.numel(), _BLOCK):
            sl = slice(s0, s0 + _BLOCK)
            at = left[sl]
            kk, ok = _ptrs_attempt(flat[at], u_all[at], v_all[at], None)
            k[at[ok]] = kk[ok]
            ok_all[sl] = ok
        left = left[~ok_all]
    return todo.nonzero().squeeze(1) if left is None else left


def _ptrs_attempt(lam: Tensor, u: Tensor, v: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """One PTRS attempt per value (NumPy's ``random_poisson_ptrs``): ``(k, accepted)`` for the rates ``lam``
    (>= 10 where ``valid``; elsewhere never accepted) and the uniforms ``u``, ``v``."""
    u = u.to(torch.float64) - 0.5
    v = v.to(torch.float64)
    b_ = lam.sqrt().mul_(2.53).add_(0.931)
    a2_ = b_.mul(0.02483).sub_(0.059).mul_(2.0)
    vr_ = (b_ - 2.0).reciprocal_().mul_(-3.6224).add_(0.9277)
    us = 0.5 - u.abs()
    kk = torch.floor((a2_ / us + b_) * u + lam + 0.43)
    ok = (us >= 0.07) & (v <= vr_)  # the squeeze: about 86% of the values
    # the others: the exact acceptance test
    hard = ~ok & (kk >= 0) & (us > 0) & ~((us < 0.013) & (v > us))
    if valid is not None:
        ok &= valid
        hard &= valid
    hard = hard.nonzero().squeeze(1)
    if hard.numel():
        lh, bh, uh, kh = lam[hard], b_[hard], us[hard], kk[hard]
        log_invalpha = torch.log(1.1239 + 1.1328 / (bh - 3.4))
        lhs = torch.log(v[hard]) + log_invalpha - torch.log(0.5 * a2_[hard] / (uh * uh) + bh)
        ok[hard] = lhs <= -lh + kh * torch.log(lh) - torch.lgamma(kh + 1.0)
    return kk, ok


def _poisson_step(kk: Tensor, ll: Tensor, uu: Tensor) -> Tensor:
    """+1 where ``P(X <= kk) < uu`` (X ~ Poisson(``ll``)), -1 where ``P(X <= kk - 1) >= uu`` (and kk > 0), else 0."""
    cdf = torch.special.gammaincc(kk + 1.0, ll)
    pmf = torch.exp(kk * torch.log(ll) - ll - torch.lgamma(kk + 1.0))
    return (uu > cdf).to(kk.dtype) - ((uu <= cdf - pmf) & (kk > 0)).to(kk.dtype)


def add_noise(x: Tensor, p: NoiseParams) -> Tensor:
    """Apply each image's noise kind (see the module docstring); output clipped to [0, 1]."""

    def gaussian(xs: Tensor, i: Tensor) -> Tensor:
        return xs + per_sample(p.var[i], xs).sqrt() * _normal(xs, p.seed[i], 1)

    def speckle(xs: Tensor, i: Tensor) -> Tensor:
        return xs + xs * per_sample(p.var[i], xs).sqrt() * _normal(xs, p.seed[i], 1)

    def poisson(xs: Tensor, i: Tensor) -> Tensor:
        vals = torch.exp2(torch.ceil(torch.log2(distinct_counts(xs).to(torch.float64)))).view(-1, 1, 1, 1)
        lam = xs.detach().to(torch.float64) * vals
        k = sample_poisson(lam, lambda s: _uniform(xs, p.seed[i], 4 + s))  # streams 4 (inversion), 5-8 (PTRS)
        return (k / vals).to(xs.dtype)

    def impulse(xs: Tensor, i: Tensor, salt_prob: float | None) -> Tensor:
        flip = _uniform(xs, p.seed[i], 2) < per_sample(p.amount[i], xs).to(torch.float64)
        q = p.salt_vs_pepper[i] if salt_prob is None else torch.full_like(p.amount[i], float(salt_prob))
        salted = _uniform(xs, p.seed[i], 3) < per_sample(q, xs).to(torch.float64)
        out = torch.where(flip & salted, torch.ones_like(xs), xs)
        return torch.where(flip & ~salted, torch.zeros_like(xs), out)

    return dispatch(x, p.kind, [gaussian, poisson, lambda xs, i: impulse(xs, i, 1.0), lambda xs, i: impulse(xs, i, 0.0),
                                lambda xs, i: impulse(xs, i, None), speckle]).clamp(0.0, 1.0)


class Noise(RandomTransform):
    """Random noise of a random kind.

    Args:
        kinds: the noise kinds to draw from (uniformly), a subset of :data:`KINDS`.
        var: (min, max) variance of gaussian and speckle noise.
        amount: (min, max) fraction of values replaced by salt/pepper noise.
        salt_vs_pepper: (min, max) salt share of ``s&p`` noise.
    """

    name = "noise"
    grad = "approx"
    call_cost = 1.6
    chunk_values = None
    options = ("kinds", "var", "amount", "salt_vs_pepper")

    def __init__(
        self,
        *,
        kinds: tuple[str, ...] = KINDS,
        var: tuple[float, float] = (0.0005, 0.01),
        amount: tuple[float, float] = (0.005, 0.05),
        salt_vs_pepper: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.kinds = check_choices("kinds", kinds, KINDS)
        self.var = check_range("var", var, 0.0, 1.0)
        self.amount = check_range("amount", amount, 0.0, 1.0)
        self.salt_vs_pepper = check_range("salt_vs_pepper", salt_vs_pepper, 0.0, 1.0)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> NoiseParams:
        d = Draws(n, generator)
        return NoiseParams(
            kind=d.pick([KINDS.index(k) for k in self.kinds]), var=d.uniform(*self.var),
            amount=d.uniform(*self.amount), salt_vs_pepper=d.uniform(*self.salt_vs_pepper), seed=d.seeds(),
        ).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        return add_noise(x, expect(p, NoiseParams).to(x.device))

    def apply_surrogate(self, x: Tensor, p: Params) -> Tensor:
        p = expect(p, NoiseParams).to(x.device)
        out = add_noise(x, p)
        is_poisson = (p.kind == KINDS.index("poisson")).view(-1, 1, 1, 1)
        return torch.where(is_poisson, x + (out - x).detach(), out)
