"""Each denoiser matches its scikit-image/SciPy reference on identical parameters.

Documented tolerances (max abs difference, images in [0, 1], float64):

================  ==========================================================  =========
variant           reference                                                   tolerance
================  ==========================================================  =========
gaussian          skimage.filters.gaussian(mode='nearest')                    5e-4 (kernel cut at the largest sigma's radius)
median            skimage.filters.median(footprint=square, mode='nearest')    exact
mean              scipy.ndimage.uniform_filter(mode='nearest')                1e-12
bilateral         skimage.restoration.denoise_bilateral                       2e-3 (scikit-image bins its colour weights)
tv                skimage.restoration.denoise_tv_chambolle                    1e-9
wavelet           skimage.restoration.denoise_wavelet (db1), clipped to [0,1]  1e-9
nl_means          skimage.restoration.denoise_nl_means (fast mode)            1e-2 max, 1e-3 mean
================  ==========================================================  =========
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage import filters, restoration

from bastion.defenses.bart import Denoise
from bastion.defenses.bart.denoise import (
    KINDS,
    DenoiseParams,
    bilateral,
    gaussian,
    mean,
    median,
    nl_means,
    tv_chambolle,
    wavelet,
)

from .conftest import channel_axis, hwc


def rand(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def pick(n: int, values: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.tensor(values)[torch.randint(0, len(values), (n,), generator=torch.Generator().manual_seed(seed))]


def footprint(x: torch.Tensor, k: int) -> tuple[int, ...]:
    return (k, k) if x.shape[0] == 1 else (k, k, 1)


def test_gaussian(images: torch.Tensor) -> None:
    s = rand(images.shape[0], 0.1, 2.0, 0)
    y = gaussian(images, s, max_sigma=2.0)
    for i in range(images.shape[0]):
        ref = filters.gaussian(hwc(images[i]), sigma=float(s[i]), mode="nearest", channel_axis=channel_axis(images[i]))
        np.testing.assert_allclose(hwc(y[i]), ref, atol=5e-4)


def test_median_and_mean(images: torch.Tensor) -> None:
    k = pick(images.shape[0], (3, 5), 1)
    ym, ya = median(images, k), mean(images, k)
    for i in range(images.shape[0]):
        fp = np.ones((int(k[i]),) * 2, dtype=bool)
        im = hwc(images[i])
        ref = filters.median(im, footprint=fp, mode="nearest") if images.shape[1] == 1 else np.stack(
            [filters.median(im[..., c], footprint=fp, mode="nearest") for c in range(3)], -1)
        np.testing.assert_array_equal(hwc(ym[i]), ref)
        np.testing.assert_allclose(hwc(ya[i]), ndi.uniform_filter(im, size=footprint(images[i], int(k[i])), mode="nearest"),
                                   atol=1e-12)


def test_bilateral(images: torch.Tensor) -> None:
    n = images.shape[0]
    sc, ss = rand(n, 0.05, 0.25, 2), rand(n, 0.5, 1.5, 3)
    y = bilateral(images, sc, ss)
    for i in range(n):
        ref = restoration.denoise_bilateral(hwc(images[i]), sigma_color=float(sc[i]), sigma_spatial=float(ss[i]),
                                            channel_axis=channel_axis(images[i]))
        np.testing.assert_allclose(hwc(y[i]), ref, atol=2e-3)


def test_tv_chambolle(images: torch.Tensor) -> None:
    w = rand(images.shape[0], 0.05, 0.25, 4)
    y = tv_chambolle(images, w)
    for i in range(images.shape[0]):
        ref = restoration.denoise_tv_chambolle(hwc(images[i]), weight=float(w[i]), channel_axis=channel_axis(images[i]))
        np.testing.assert_allclose(hwc(y[i]), ref, atol=1e-9)


def test_wavelet(images: torch.Tensor) -> None:
    pytest.importorskip("pywt", reason="scikit-image's denoise_wavelet needs PyWavelets")
    m = torch.arange(images.shape[0]) % 2
    y = wavelet(images, m)
    for i in range(images.shape[0]):
        ref = restoration.denoise_wavelet(hwc(images[i]), method=("BayesShrink", "VisuShrink")[int(m[i])],
                                          channel_axis=channel_axis(images[i]), rescale_sigma=True)
        np.testing.assert_allclose(hwc(y[i]), np.clip(ref, 0, 1), atol=1e-9)


def test_nl_means(images: torch.Tensor) -> None:
    n = images.shape[0]
    h, pt, dd = rand(n, 0.05, 0.15, 5), pick(n, (3, 5), 6), pick(n, (2, 3, 4), 7)
    y = nl_means(images, h, pt, dd)
    errs = []
    for i in range(n):
        ref = restoration.denoise_nl_means(hwc(images[i]), h=float(h[i]), patch_size=int(pt[i]),
                                           patch_distance=int(dd[i]), channel_axis=channel_axis(images[i]))
        errs.append(np.abs(hwc(y[i]) - ref.reshape(hwc(y[i]).shape)))
    assert max(e.max() for e in errs) < 1e-2
    assert np.mean([e.mean() for e in errs]) < 1e-3


def test_group_dispatches_each_kind(gray: torch.Tensor) -> None:
    t = Denoise()
    n = gray.shape[0]
    p = t.sample(n, generator=torch.Generator().manual_seed(0))
    p = DenoiseParams(**{**p.__dict__, "kind": torch.arange(n) % len(KINDS)})
    y = t.apply(gray, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = [gaussian(gray[0:1], p.sigma[0:1], max_sigma=t.sigma[1]), median(gray[1:2], p.size[1:2])]
    torch.testing.assert_close(y[0:1], direct[0].clamp(0, 1))
    torch.testing.assert_close(y[1:2], direct[1])
    assert not torch.equal(y, gray)
