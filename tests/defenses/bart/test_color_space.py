"""Round trips through HSV/LAB/XYZ/YUV match scikit-image's conversions with the same channel shift.

Tolerances: 1e-6 (HSV: kornia's epsilon guard), 1e-9 (LAB, XYZ), 1e-3 (YUV: kornia's matrix is rounded to
three decimals, scikit-image's is not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color

from bastion.defenses.bart import ColorSpace
from bastion.defenses.bart.color_space import RANGES, SPACES, ColorSpaceParams

SK = {"hsv": (color.rgb2hsv, color.hsv2rgb, (1.0, 1.0, 1.0), 1e-6),
      "lab": (color.rgb2lab, color.lab2rgb, RANGES["lab"], 1e-9),
      "xyz": (color.rgb2xyz, color.xyz2rgb, RANGES["xyz"], 1e-9),
      "yuv": (color.rgb2yuv, color.yuv2rgb, RANGES["yuv"], 1e-3)}


@pytest.mark.parametrize("space", SPACES)
def test_matches_scikit_image(space: str, rgb: torch.Tensor) -> None:
    n = rgb.shape[0]
    drawn = ColorSpace().sample(n, generator=torch.Generator().manual_seed(SPACES.index(space)))
    p = ColorSpaceParams(space=torch.full((n,), SPACES.index(space)), channel=torch.arange(n) % 3, delta=drawn.delta)
    y = ColorSpace().apply(rgb, p)
    fwd, inv, rng, tol = SK[space]
    for i in range(n):
        z = fwd(rgb[i].numpy().transpose(1, 2, 0)).copy()
        c = int(p.channel[i])
        z[..., c] += float(p.delta[i]) * rng[c]
        if space == "hsv":
            z[..., 0] = np.mod(z[..., 0], 1.0)
            z[..., 1:] = np.clip(z[..., 1:], 0, 1)
        if space == "lab":
            z[..., 0] = np.clip(z[..., 0], 0, 100)
        np.testing.assert_allclose(y[i].numpy().transpose(1, 2, 0), np.clip(inv(z), 0, 1), atol=tol)


def test_zero_shift_round_trip_is_identity(rgb: torch.Tensor) -> None:
    n = rgb.shape[0]
    for s in range(len(SPACES)):
        p = ColorSpaceParams(space=torch.full((n,), s), channel=torch.zeros(n, dtype=torch.long),
                             delta=torch.zeros(n, dtype=torch.float64))
        torch.testing.assert_close(ColorSpace().apply(rgb, p), rgb, atol=1e-4, rtol=0)
