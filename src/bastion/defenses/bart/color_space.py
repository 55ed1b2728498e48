"""Colour space change: a round trip through HSV, LAB, XYZ or YUV with a perturbation there (BaRT group 7).

Each image is converted (``kornia.color``; XYZ from linearised sRGB, as scikit-image does) to a random
space, one random channel is shifted by ``delta`` times that channel's nominal range (hue wraps around,
S/V and L are kept in range), and the image is converted back to RGB and clipped to [0, 1]. The
conversions are smooth almost everywhere, so the group declares ``grad = "exact"``. Colour spaces need
three channels: the group declares ``channels = (3,)`` and BaRT skips it on grayscale inputs.
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia.color as kc
import torch
from torch import Tensor

from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_choices, check_range, expect
from bastion.defenses.bart.functional import dispatch

SPACES = ("hsv", "lab", "xyz", "yuv")
#: nominal range of each channel of each space (kornia's units: hue in radians, LAB as CIE L*a*b*)
RANGES = {"hsv": (2 * math.pi, 1.0, 1.0), "lab": (100.0, 255.0, 255.0), "xyz": (1.0, 1.0, 1.0),
          "yuv": (1.0, 0.872, 1.23)}


@dataclass(frozen=True)
class ColorSpaceParams(Params):
    """Per image: ``space`` (index into :data:`SPACES`), ``channel`` (0..2), ``delta`` (fraction of range)."""

    space: Tensor
    channel: Tensor
    delta: Tensor


def _shift(z: Tensor, channel: Tensor, delta: Tensor, ranges: tuple[float, float, float]) -> Tensor:
    r = torch.tensor(ranges, dtype=z.dtype, device=z.device)
    onehot = torch.nn.functional.one_hot(channel.to(z.device), 3).to(z.dtype)
    return z + (onehot * r * delta.to(z).view(-1, 1)).view(-1, 3, 1, 1)


def perturb_in_space(x: Tensor, p: ColorSpaceParams) -> Tensor:
    """Round trip of each image through its colour space with its channel shift."""

    def hsv(xs: Tensor, i: Tensor) -> Tensor:
        z = _shift(kc.rgb_to_hsv(xs), p.channel[i], p.delta[i], RANGES["hsv"])
        return kc.hsv_to_rgb(torch.cat([torch.remainder(z[:, :1], 2 * math.pi), z[:, 1:].clamp(0.0, 1.0)], 1))

    def lab(xs: Tensor, i: Tensor) -> Tensor:
        z = _shift(kc.rgb_to_lab(xs), p.channel[i], p.delta[i], RANGES["lab"])
        return kc.lab_to_rgb(torch.cat([z[:, :1].clamp(0.0, 100.0), z[:, 1:]], 1), clip=True)

    def xyz(xs: Tensor, i: Tensor) -> Tensor:
        z = _shift(kc.rgb_to_xyz(kc.rgb_to_linear_rgb(xs)), p.channel[i], p.delta[i], RANGES["xyz"])
        return kc.linear_rgb_to_rgb(kc.xyz_to_rgb(z).clamp(0.0, 1.0))

    def yuv(xs: Tensor, i: Tensor) -> Tensor:
        return kc.yuv_to_rgb(_shift(kc.rgb_to_yuv(xs), p.channel[i], p.delta[i], RANGES["yuv"]))

    return dispatch(x, p.space, [hsv, lab, xyz, yuv]).clamp(0.0, 1.0)


class ColorSpace(RandomTransform):
    """Round trip through a random colour space with a random channel shift.

    Args:
        spaces: spaces to draw from (uniformly), a subset of :data:`SPACES`.
        delta: (min, max) of the absolute shift, as a fraction of the channel's range (sign random).
    """

    name = "color_space"
    grad = "exact"
    call_cost = 1.5
    chunk_values = None
    channels = (3,)
    options = ("spaces", "delta")

    def __init__(self, *, spaces: tuple[str, ...] = SPACES, delta: tuple[float, float] = (0.0, 0.1)) -> None:
        super().__init__()
        self.spaces = check_choices("spaces", spaces, SPACES)
        self.delta = check_range("delta", delta, 0.0, 1.0)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> ColorSpaceParams:
        d = Draws(n, generator)
        space = d.pick([SPACES.index(s) for s in self.spaces])
        sign = d.randint(0, 1).to(torch.float64) * 2 - 1
        return ColorSpaceParams(space=space, channel=d.randint(0, 2),
                                delta=sign * d.uniform(*self.delta)).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        return perturb_in_space(x, expect(p, ColorSpaceParams).to(x.device))
