"""Greyscale: random channel mixes and partial greyscale (BaRT group 9; colour images only).

A grey plane ``g = w_r R + w_g G + w_b B`` with random non-negative weights summing to one replaces a
random subset of the channels (all three with probability 1/2), blended by ``amount`` (1, full greyscale,
with probability 1/2; otherwise uniform in ``amount``): ``out_c = x_c + a * m_c * (g - x_c)``. This covers
the paper's greyscale mix, partial greyscale and one/two-channel partial greyscale. Linear in the image
(``grad = "exact"``). Grayscale inputs are already grey, so the group declares ``channels = (3,)`` and BaRT
skips it on them.
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_prob, check_range, expect
from bastion.defenses.bart.functional import per_sample


@dataclass(frozen=True)
class GreyscaleParams(Params):
    """Per image: ``weights`` (n, 3) channel weights of the grey plane; ``mask`` (n, 3) channels replaced;
    ``amount`` (n,) blend factor."""

    weights: Tensor
    mask: Tensor
    amount: Tensor


def mix_grey(x: Tensor, weights: Tensor, mask: Tensor, amount: Tensor) -> Tensor:
    """``x_c + amount * mask_c * (sum_k w_k x_k - x_c)`` for each image of ``x`` (N, 3, H, W)."""
    w = weights.to(x).view(-1, 3, 1, 1)
    grey = (x * w).sum(1, keepdim=True)
    m = mask.to(x).view(-1, 3, 1, 1) * per_sample(amount, x)
    return (x + m * (grey - x)).clamp(0.0, 1.0)


class Greyscale(RandomTransform):
    """Random (partial) greyscale.

    Args:
        amount: (min, max) blend factor of partial greyscale.
        full_prob: probability of a full (amount 1) conversion.
        all_channels_prob: probability that all three channels are replaced.
    """

    name = "greyscale"
    grad = "exact"
    call_cost = 0.1
    channels = (3,)
    options = ("amount", "full_prob", "all_channels_prob")

    def __init__(self, *, amount: tuple[float, float] = (0.0, 1.0), full_prob: float = 0.5,
                 all_channels_prob: float = 0.5) -> None:
        super().__init__()
        self.amount = check_range("amount", amount, 0.0, 1.0)
        self.full_prob = check_prob("full_prob", full_prob)
        self.all_channels_prob = check_prob("all_channels_prob", all_channels_prob)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> GreyscaleParams:
        d = Draws(n, generator)
        w = torch.rand(n, 3, generator=generator, dtype=torch.float64) + 1e-3
        w = w / w.sum(1, keepdim=True)
        subset = d.randint(1, 6)  # a non-empty proper subset of {R, G, B} as bits
        bits = torch.stack([(subset >> k) & 1 for k in range(3)], 1).bool()
        mask = torch.where(d.coin(self.all_channels_prob)[:, None], torch.ones_like(bits), bits)
        amount = torch.where(d.coin(self.full_prob), torch.ones(n, dtype=torch.float64), d.uniform(*self.amount))
        return GreyscaleParams(weights=w, mask=mask, amount=amount).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        p = expect(p, GreyscaleParams)
        return mix_grey(x, p.weights, p.mask, p.amount)
