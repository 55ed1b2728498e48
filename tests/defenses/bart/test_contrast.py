"""Histogram equalisation and contrast stretching match scikit-image (``equalize_hist``,
``rescale_intensity`` between ``np.percentile`` values) to 1e-9 on identical parameters."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from skimage import exposure

from bastion.defenses.bart import Contrast
from bastion.defenses.bart.contrast import KINDS, ContrastParams, equalize_hist, stretch

from .conftest import hwc


def test_equalize_matches_scikit_image(images: torch.Tensor) -> None:
    nb = torch.tensor([40, 64, 100, 128, 177, 200, 255, 256])
    y = equalize_hist(images, nb)
    for i in range(images.shape[0]):
        with warnings.catch_warnings():  # "might be a color image": one histogram over all values, as intended
            warnings.simplefilter("ignore", UserWarning)
            ref = exposure.equalize_hist(hwc(images[i]), nbins=int(nb[i]))
        np.testing.assert_allclose(hwc(y[i]), ref, atol=1e-9)


def test_equalize_constant_image_like_scikit_image() -> None:
    x = torch.full((1, 1, 5, 5), 0.3, dtype=torch.float64)
    ref = exposure.equalize_hist(np.full((5, 5), 0.3), nbins=256)
    np.testing.assert_allclose(equalize_hist(x, torch.tensor([256]))[0, 0].numpy(), ref, atol=1e-12)


def test_stretch_matches_scikit_image(images: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    n = images.shape[0]
    lo = 1 + 3 * torch.rand(n, generator=g, dtype=torch.float64)
    hi = 96 + 3 * torch.rand(n, generator=g, dtype=torch.float64)
    y = stretch(images, lo, hi)
    for i in range(n):
        a, b = np.percentile(hwc(images[i]), (float(lo[i]), float(hi[i])))
        np.testing.assert_allclose(hwc(y[i]), exposure.rescale_intensity(hwc(images[i]), in_range=(a, b)), atol=1e-9)


def test_clahe_raises_local_contrast(gray: torch.Tensor) -> None:
    n = gray.shape[0]
    p = Contrast().sample(n, generator=torch.Generator().manual_seed(0))
    p = ContrastParams(**{**p.__dict__, "kind": torch.full((n,), KINDS.index("clahe"))})
    y = Contrast().apply(gray.float(), p)
    assert y.shape == gray.shape and not torch.equal(y, gray.float())
    assert float(y.std()) > 0.2
