"""Histogram equalisation and contrast stretching match scikit-image (``equalize_hist``,
``rescale_intensity`` between ``np.percentile`` values) to 1e-9 on identical parameters."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
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
    """On washed-out images (pixels squeezed into [0.4, 0.6]) CLAHE spreads the values of every 7x7
    neighbourhood: the mean local standard deviation grows (about 1.9x here; the identity keeps it)."""
    n = gray.shape[0]
    p = Contrast().sample(n, generator=torch.Generator().manual_seed(0))
    p = ContrastParams(**{**p.__dict__, "kind": torch.full((n,), KINDS.index("clahe"))})
    flat = 0.4 + 0.2 * gray.float()

    def local_std(z: torch.Tensor) -> float:
        mean = F.avg_pool2d(z, 7, stride=1)
        return float((F.avg_pool2d(z * z, 7, stride=1) - mean * mean).clamp_min(0).sqrt().mean())

    y = Contrast().apply(flat, p)
    assert y.shape == gray.shape
    assert local_std(y) > 1.5 * local_std(flat)


def test_clahe_equals_kornia_per_image() -> None:
    """CLAHE gathers each pixel's four tile lookups itself: values must equal kornia's ``equalize_clahe`` on
    each image alone, with its clip limit and grid (even and odd tile sizes)."""
    from kornia.enhance import equalize_clahe

    from bastion.defenses.bart.contrast import CLIP_LIMITS, clahe

    g = torch.Generator().manual_seed(0)
    for x in (torch.rand(12, 1, 28, 28, generator=g), torch.rand(12, 3, 32, 32, generator=g),
              torch.rand(6, 3, 30, 30, generator=g).double(), torch.rand(6, 1, 29, 31, generator=g)):
        clip = torch.randint(0, len(CLIP_LIMITS), (x.shape[0],), generator=g)
        grid = torch.tensor([2, 3, 4, 5, 7, 2] * 2)[: x.shape[0]]
        y = clahe(x, clip, grid)
        for i in range(x.shape[0]):
            ref = equalize_clahe(x[i : i + 1], clip_limit=256.0 * CLIP_LIMITS[int(clip[i])],
                                 grid_size=(int(grid[i]), int(grid[i])))
            assert torch.equal(y[i : i + 1], ref)


def test_quantiles_by_partial_sort_equal_full_sort() -> None:
    from bastion.defenses.bart.functional import quantile_linear

    g = torch.Generator().manual_seed(0)
    for shape in [(20, 3072), (7, 784), (3, 5), (4, 1)]:
        x = torch.rand(shape, generator=g)
        x[0, : shape[1] // 2] = 0.5  # ties
        q = torch.rand(shape[0], 2, generator=g, dtype=torch.float64)
        q[:, 0] *= 0.05
        q[:, 1] = 0.95 + 0.05 * q[:, 1]
        q[0, 1], q[1 % shape[0], 0] = 1.0, 0.0
        y = quantile_linear(x, q)  # NumPy sort
        assert torch.equal(quantile_linear(x.clone().requires_grad_(True), q).detach(), y)  # partial sorts (topk)
        s = torch.sort(x, dim=1).values  # numpy's 'linear' rule on the fully sorted rows, same arithmetic
        pos = q.to(x.dtype) * (shape[1] - 1)
        lo = pos.floor().clamp(0, shape[1] - 1).long()
        hi = (lo + 1).clamp(max=shape[1] - 1)
        a, b = s.gather(1, lo), s.gather(1, hi)
        assert torch.equal(y, a + (b - a) * (pos - lo.to(x.dtype)))
