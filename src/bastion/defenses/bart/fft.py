"""FFT perturbation: zero a random fraction of each channel's Fourier coefficients (BaRT group 5).

Each channel's 2-D FFT has every coefficient zeroed independently with probability ``p_c``, drawn per
image and channel from ``fraction``; the DC coefficient is always kept so the image keeps its mean
intensity. The paper draws ``p_c`` in 0..0.95 on 224-pixel ImageNet images; bastion's default stops at
0.8, because on 28x28 digits zeroing more than ~80% of the 784 coefficients leaves little of the digit (a
briefly fine-tuned MNIST model fell to ~50% accuracy on fractions above 0.76); pass ``fraction=(0, 0.95)``
for the paper's range. The real part of the inverse FFT, clipped to [0, 1], is the output. The zeroing mask
is a pure function of the image's seed (replayable, batch-independent) and the map is linear in the image,
so the gradient is exact.
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._rng import keyed_uniform
from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_range, expect

_SEED = 0x666674


@dataclass(frozen=True)
class FFTParams(Params):
    """Per image: ``fraction`` (n, 3) share of coefficients zeroed in each channel; ``seed`` of the mask."""

    fraction: Tensor
    seed: Tensor


def fft_mask(shape: tuple[int, ...], fraction: Tensor, seed: Tensor, *, dtype: torch.dtype) -> Tensor:
    """(N, C, H, W) keep-mask: 0 with probability ``fraction[:, c]``, DC always 1."""
    c = shape[0]
    u = keyed_uniform(seed, shape, seed=_SEED, dtype=torch.float64)
    frac = fraction[:, :c] if c <= fraction.shape[1] else fraction[:, :1].expand(-1, c)
    keep = (u >= frac.to(torch.float64)[:, :, None, None]).to(dtype)
    keep[:, :, 0, 0] = 1.0
    return keep


class FFTPerturbation(RandomTransform):
    """Zero random Fourier coefficients.

    Args:
        fraction: (min, max) share of coefficients zeroed per channel (< 1).
    """

    name = "fft"
    grad = "exact"
    call_cost = 0.35
    options = ("fraction",)

    def __init__(self, *, fraction: tuple[float, float] = (0.0, 0.8)) -> None:
        super().__init__()
        self.fraction = check_range("fraction", fraction, 0.0, 0.999)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> FFTParams:
        d = Draws(n, generator)
        frac = torch.stack([d.uniform(*self.fraction) for _ in range(3)], 1)
        return FFTParams(fraction=frac, seed=d.seeds()).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        p = expect(p, FFTParams).to(x.device)
        keep = fft_mask(tuple(x.shape[1:]), p.fraction, p.seed, dtype=x.dtype)
        return masked_real_ifft(x, keep).clamp(0.0, 1.0)


def masked_real_ifft(x: Tensor, keep: Tensor) -> Tensor:
    """``real(ifft2(fft2(x) * keep))`` for real ``x`` and a real ``keep`` (..., H, W), on half spectra.

    The spectrum ``F`` of a real image is Hermitian (``F[-k] = conj(F[k])``), so the real part of the inverse
    transform of ``F * keep`` is the inverse transform of ``F * (keep + keep[-k]) / 2``, which is Hermitian
    too: ``irfft2`` of the half spectrum ``rfft2(x) * sym[..., :W // 2 + 1]`` gives it with half the work.
    """
    h, w = x.shape[-2:]
    flipped = torch.roll(keep.flip(-2, -1), shifts=(1, 1), dims=(-2, -1))  # keep[(-i) % H, (-j) % W]
    sym = (keep + flipped)[..., : w // 2 + 1] * 0.5
    return torch.fft.irfft2(torch.fft.rfft2(x) * sym, s=(h, w))
