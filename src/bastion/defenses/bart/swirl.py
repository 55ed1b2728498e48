"""Swirl: a random whirlpool warp (BaRT group 3).

The output pixel at distance ``rho`` from the centre samples the input rotated by
``theta = strength * exp(-rho / r)`` with ``r = radius * ln(2) / 5``, scikit-image's ``swirl`` mapping, with
bilinear interpolation and mirror ('reflect') boundaries. The whole batch is warped in one ``grid_sample``
call from a per-image displacement field, so the result is differentiable in the image (``grad = "exact"``).

Parameters are drawn relative to the image so one configuration serves any size: the centre uniformly in
the image, ``strength`` uniformly in ``strength`` (paper: 0.01..2) and the radius as a fraction of the
longer side (paper: 10..200 px on 224 px images, i.e. about 0.05..0.9).
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_range, expect


@dataclass(frozen=True)
class SwirlParams(Params):
    """Per image: centre ``cx``, ``cy`` as fractions of (W-1, H-1); ``strength`` (radians);
    ``radius`` as a fraction of max(H, W)."""

    cx: Tensor
    cy: Tensor
    strength: Tensor
    radius: Tensor

    def pixels(self, h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x0, y0, strength, radius) in pixel units for an H x W image (x: column, y: row)."""
        return self.cx * (w - 1), self.cy * (h - 1), self.strength, self.radius * max(h, w)


def swirl(x: Tensor, x0: Tensor, y0: Tensor, strength: Tensor, radius: Tensor) -> Tensor:
    """Swirl each image of ``x`` (N, C, H, W) about (x0, y0) (pixels, (N,) each); mirror boundaries."""
    n, _, h, w = x.shape
    dt = x.dtype
    ys = torch.arange(h, device=x.device, dtype=dt).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=dt).view(1, 1, w)
    x0, y0 = x0.to(x).view(-1, 1, 1), y0.to(x).view(-1, 1, 1)
    s, r = strength.to(x).view(-1, 1, 1), radius.to(x).view(-1, 1, 1)
    dx, dy = xs - x0, ys - y0
    rho = torch.sqrt(dx * dx + dy * dy)
    # rotate (dx, dy) by a = s exp(-rho / r'): rho (cos, sin)(a + atan2(dy, dx)) = (dx cos a - dy sin a, ...)
    a = s * torch.exp(-rho / (r * math.log(2) / 5))
    cos_a, sin_a = torch.cos(a), torch.sin(a)
    sx = x0 + (dx * cos_a - dy * sin_a)
    sy = y0 + (dx * sin_a + dy * cos_a)
    grid = torch.stack([sx * (2 / max(w - 1, 1)) - 1, sy * (2 / max(h - 1, 1)) - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


class Swirl(RandomTransform):
    """A random swirl.

    Args:
        strength: (min, max) swirl strength in radians.
        radius: (min, max) swirl radius as a fraction of the image's longer side.
    """

    name = "swirl"
    grad = "exact"
    call_cost = 0.3
    options = ("strength", "radius")

    def __init__(self, *, strength: tuple[float, float] = (0.01, 2.0), radius: tuple[float, float] = (0.05, 0.9)) -> None:
        super().__init__()
        self.strength = check_range("strength", strength, 0.0, 50.0)
        self.radius = check_range("radius", radius, 1e-3, 10.0)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> SwirlParams:
        d = Draws(n, generator)
        return SwirlParams(cx=d.uniform(0.0, 1.0), cy=d.uniform(0.0, 1.0), strength=d.uniform(*self.strength),
                           radius=d.uniform(*self.radius)).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        p = expect(p, SwirlParams)
        return swirl(x, *p.pixels(x.shape[2], x.shape[3])).clamp(0.0, 1.0)
