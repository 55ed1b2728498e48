"""Zoom: a random crop resized back to the full image (BaRT group 6).

A square-aspect crop covering ``scale`` of each side (paper: zoom-in of up to about a third; default
0.7..1) at a uniformly random position is resized to the input size with bilinear interpolation (a
single batched ``affine_grid``/``grid_sample`` call; pixel-area alignment as in ``resize``). The map is
linear in the image, so the gradient is exact. (The paper's group also had seam-carving expansion, which
is not implemented.)
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_range, expect


@dataclass(frozen=True)
class ZoomParams(Params):
    """Per image: ``scale`` (crop side / image side), ``u``, ``v`` (crop position in [0, 1], x and y)."""

    scale: Tensor
    u: Tensor
    v: Tensor


def crop_resize(x: Tensor, scale: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Crop ``scale`` of each side at relative position (u, v) and resize back to (H, W), bilinear."""
    s = scale.to(x)
    tx = (2 * u.to(x) - 1) * (1 - s)
    ty = (2 * v.to(x) - 1) * (1 - s)
    zero = torch.zeros_like(s)
    theta = torch.stack([torch.stack([s, zero, tx], 1), torch.stack([zero, s, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Zoom(RandomTransform):
    """Random zoom-in.

    Args:
        scale: (min, max) crop side as a fraction of the image side (<= 1).
    """

    name = "zoom"
    grad = "exact"
    call_cost = 0.25
    options = ("scale",)

    def __init__(self, *, scale: tuple[float, float] = (0.7, 1.0)) -> None:
        super().__init__()
        self.scale = check_range("scale", scale, 0.05, 1.0)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> ZoomParams:
        d = Draws(n, generator)
        return ZoomParams(scale=d.uniform(*self.scale), u=d.uniform(0.0, 1.0), v=d.uniform(0.0, 1.0)).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        p = expect(p, ZoomParams).to(x.device)
        return crop_resize(x, p.scale, p.u, p.v).clamp(0.0, 1.0)
