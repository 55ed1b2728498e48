"""Colour precision reduction: fewer intensity levels per channel (BaRT group 1).

Each channel is quantised to ``L`` evenly spaced levels in [0, 1], ``L`` drawn uniformly from
``levels`` (the paper's range is 8..200), either one ``L`` shared by all channels or one per channel
(each with probability 1/2). Grayscale images use the first draw. Rounding has a zero gradient almost
everywhere, so the group declares ``grad = "approx"``; its surrogate rounds softly (:func:`soft_round`).

Raff et al., "Barrage of Random Transforms for Adversarially Robust Defense", CVPR 2019,
https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_int_range, check_prob, expect
from bastion.defenses.bart.functional import soft_round


@dataclass(frozen=True)
class ColorPrecisionParams(Params):
    """``levels``: (n, 3) int64, the number of levels of each channel (channel 0 only for grayscale)."""

    levels: Tensor


class ColorPrecision(RandomTransform):
    """Quantise each channel to a random number of levels.

    Args:
        levels: (min, max) number of levels per channel, inclusive (>= 2).
        shared_prob: probability that one number of levels is used for all channels.

    Example:
        >>> import torch
        >>> t = ColorPrecision()
        >>> p = t.sample(4, generator=torch.Generator().manual_seed(0))
        >>> t.apply(torch.rand(4, 3, 8, 8), p).shape
        torch.Size([4, 3, 8, 8])
    """

    name = "color_precision"
    grad = "approx"
    call_cost = 0.05
    options = ("levels", "shared_prob")

    def __init__(self, *, levels: tuple[int, int] = (8, 200), shared_prob: float = 0.5) -> None:
        super().__init__()
        self.levels = check_int_range("levels", levels, 2)
        self.shared_prob = check_prob("shared_prob", shared_prob)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> ColorPrecisionParams:
        d = Draws(n, generator)
        lv = torch.stack([d.randint(*self.levels) for _ in range(3)], 1)
        lv = torch.where(d.coin(self.shared_prob)[:, None], lv[:, :1].expand(-1, 3), lv)
        return ColorPrecisionParams(levels=lv).to(device or "cpu")

    def _steps(self, x: Tensor, p: Params) -> Tensor:
        levels = expect(p, ColorPrecisionParams).levels.to(x.device)
        c = x.shape[1]
        lv = levels[:, :c] if c <= 3 else levels[:, :1].expand(-1, c)
        return (lv - 1).to(x.dtype)[:, :, None, None]

    def transform(self, x: Tensor, p: Params) -> Tensor:
        q = self._steps(x, p)
        return torch.round(x * q) / q

    def apply_surrogate(self, x: Tensor, p: Params) -> Tensor:
        q = self._steps(x, p)
        return (soft_round(x * q) / q).clamp(0.0, 1.0)
