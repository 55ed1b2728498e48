from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.defenses.bart import FFTPerturbation
from bastion.defenses.bart.fft import FFTParams, fft_mask, masked_real_ifft


def test_matches_numpy_with_the_same_mask(images: torch.Tensor) -> None:
    t = FFTPerturbation()
    p = t.sample(images.shape[0], generator=torch.Generator().manual_seed(0))
    y = t.apply(images, p).numpy()
    keep = fft_mask(tuple(images.shape[1:]), p.fraction, p.seed, dtype=torch.float64).numpy()
    ref = np.clip(np.real(np.fft.ifft2(np.fft.fft2(images.numpy()) * keep)), 0, 1)
    np.testing.assert_allclose(y, ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28), (3, 3, 7, 9), (1, 1, 8, 5), (1, 2, 1, 6)])
def test_half_spectrum_equals_the_full_one(shape: tuple[int, ...]) -> None:
    """The real part of the masked full inverse FFT, computed on half spectra: even and odd sizes."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    keep = (torch.rand(shape, generator=g, dtype=torch.float64) > 0.5).double()
    ref = np.real(np.fft.ifft2(np.fft.fft2(x.numpy()) * keep.numpy()))
    np.testing.assert_allclose(masked_real_ifft(x, keep).numpy(), ref, atol=1e-12)


def test_fraction_is_respected_and_dc_kept() -> None:
    n = 4
    frac = torch.tensor([[0.0] * 3, [0.5] * 3, [0.8] * 3, [0.3, 0.6, 0.9]], dtype=torch.float64)
    keep = fft_mask((3, 64, 64), frac, torch.arange(n), dtype=torch.float64)
    assert bool((keep[:, :, 0, 0] == 1).all())
    zeroed = 1 - keep.mean((2, 3))
    np.testing.assert_allclose(zeroed.numpy(), frac.numpy(), atol=0.03)


def test_zero_fraction_is_identity(rgb: torch.Tensor) -> None:
    p = FFTParams(fraction=torch.zeros(rgb.shape[0], 3, dtype=torch.float64), seed=torch.arange(rgb.shape[0]))
    torch.testing.assert_close(FFTPerturbation().apply(rgb, p), rgb, atol=1e-12, rtol=0)

