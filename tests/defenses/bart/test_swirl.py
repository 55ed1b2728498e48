from __future__ import annotations

import numpy as np
import torch
from skimage.transform import swirl as sk_swirl

from bastion.defenses.bart import Swirl

from .conftest import hwc

TOL = 1e-9  # float64: scikit-image's swirl mapping and bilinear interpolation, mirror boundaries


def test_matches_scikit_image(images: torch.Tensor) -> None:
    t = Swirl()
    p = t.sample(images.shape[0], generator=torch.Generator().manual_seed(0))
    y = t.apply(images, p)
    x0, y0, s, r = p.pixels(images.shape[2], images.shape[3])
    for i in range(images.shape[0]):
        ref = sk_swirl(hwc(images[i]), center=(float(x0[i]), float(y0[i])), strength=float(s[i]),
                       radius=float(r[i]), order=1, mode="reflect")
        np.testing.assert_allclose(hwc(y[i]), ref, atol=TOL)


def test_zero_strength_is_identity(rgb: torch.Tensor) -> None:
    t = Swirl(strength=(0.0, 0.0))
    p = t.sample(rgb.shape[0], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t.apply(rgb, p), rgb, atol=1e-9, rtol=0)
