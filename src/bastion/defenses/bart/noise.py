"""Noise injection: Gaussian, Poisson, salt, pepper, salt & pepper or speckle noise (BaRT group 4).

The noise models are scikit-image's ``random_noise`` ones (output clipped to [0, 1]):

* ``gaussian``: ``x + N(0, var)``; ``speckle``: ``x + x * N(0, var)``;
* ``poisson``: ``Poisson(x * v) / v`` with ``v = 2 ** ceil(log2(#distinct values of the image))``;
* ``salt`` / ``pepper`` / ``s&p``: each value is replaced, with probability ``amount``, by 1 (salt) or 0
  (pepper); for ``s&p`` a replaced value is salt with probability ``salt_vs_pepper``.

Every image carries a 62-bit seed, and its noise is a pure function of that seed and the pixel position
(the counter-based generator of :mod:`bastion._rng`): replaying the parameters replays the noise, and an
image gets the same noise in any batch. Poisson variates come from inverting the CDF (regularised incomplete gamma) at keyed uniforms.
Gaussian, speckle and impulse noise are differentiable in the image (almost everywhere), Poisson sampling
is not: the group declares ``grad = "approx"`` and its surrogate passes the gradient straight through the
Poisson kind (``x + stop_gradient(noisy - x)``).
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion._rng import keyed_uniform
from bastion.defenses.bart.base import (
    Params,
    RandomTransform,
    check_choices,
    check_range,
    expect,
    per_sample,
    seeds,
    uniform,
)
from bastion.defenses.bart.functional import dispatch, sort_rows

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
        u = _uniform(xs, p.seed[i], 4)
        live = lam > 0  # Poisson(0) is 0: only sample where the rate is positive (most of an MNIST digit)
        if bool(live.all()):
            k = poisson_from_uniform(lam, u)
        else:
            at = live.reshape(-1).nonzero().squeeze(1)
            k = torch.zeros(lam.numel(), dtype=lam.dtype, device=lam.device)
            k[at] = poisson_from_uniform(lam.reshape(-1)[at], u.reshape(-1)[at])
            k = k.view(lam.shape)
        return (k / vals).to(xs.dtype)

    def impulse(salt_prob: float | None):  # noqa: ANN202 - small closure factory
        def op(xs: Tensor, i: Tensor) -> Tensor:
            flip = _uniform(xs, p.seed[i], 2) < per_sample(p.amount[i], xs).to(torch.float64)
            q = p.salt_vs_pepper[i] if salt_prob is None else torch.full_like(p.amount[i], float(salt_prob))
            salted = _uniform(xs, p.seed[i], 3) < per_sample(q, xs).to(torch.float64)
            out = torch.where(flip & salted, torch.ones_like(xs), xs)
            return torch.where(flip & ~salted, torch.zeros_like(xs), out)

        return op

    out = dispatch(x, p.kind, [gaussian, poisson, impulse(1.0), impulse(0.0), impulse(None), speckle])
    return out.clamp(0.0, 1.0)


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
    call_cost = 1.4
    channels = (1, 3)

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

    def config(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "var": list(self.var), "amount": list(self.amount),
                "salt_vs_pepper": list(self.salt_vs_pepper)}

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> NoiseParams:
        g = generator
        allowed = torch.tensor([KINDS.index(k) for k in self.kinds])
        kind = allowed[torch.randint(0, len(allowed), (n,), generator=g)]
        return NoiseParams(
            kind=kind, var=uniform(n, *self.var, g), amount=uniform(n, *self.amount, g),
            salt_vs_pepper=uniform(n, *self.salt_vs_pepper, g), seed=seeds(n, g),
        ).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        return add_noise(x, expect(p, NoiseParams).to(x.device))

    def apply_surrogate(self, x: Tensor, p: Params) -> Tensor:
        p = expect(p, NoiseParams).to(x.device)
        out = add_noise(x, p)
        is_poisson = (p.kind == KINDS.index("poisson")).view(-1, 1, 1, 1)
        return torch.where(is_poisson, x + (out - x).detach(), out)
