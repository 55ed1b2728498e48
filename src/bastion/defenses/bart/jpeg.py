"""JPEG noise: a real JPEG encode/decode at a random quality (BaRT group 2).

``apply`` runs a baseline JPEG round trip equal to Pillow's (libjpeg-turbo's) pixel for pixel, on whole batches
of tensors (:func:`bastion.defenses.bart.jpeg_codec.jpeg_roundtrip`; the tests hold it to Pillow's codec). It is
also faster than Pillow, one image per call, at BaRT's batch sizes (17 vs 37 us per MNIST image in batches of 128
of mixed quality, 47 vs 100 us per 32x32 RGB image in batches of 1,000, on one CPU thread).

The codec rounds at every step and has no gradient, so the group declares ``grad = "approx"`` and
``apply_surrogate`` is a differentiable JPEG written in torch:
colour conversion to YCbCr, 2x2 chroma averaging, 8x8 block DCT, division by the quality-scaled standard
quantisation tables (ITU-T T.81 Annex K), *soft* rounding (:func:`soft_round`), and the inverse path.

Quality is drawn uniformly from ``quality`` (the paper's range is 55..95).
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778; differentiable JPEG after Shin & Song,
"JPEG-resistant adversarial images", NIPS 2017 MLSec workshop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.defenses.bart.base import Draws, Params, RandomTransform, check_int_range, expect
from bastion.defenses.bart.functional import soft_round
from bastion.defenses.bart.jpeg_codec import jpeg_roundtrip, quant_table_ints


@dataclass(frozen=True)
class JPEGParams(Params):
    """``quality``: (n,) int64 JPEG quality factors (1..95)."""

    quality: Tensor


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    k = torch.arange(8, dtype=torch.float64, device=device).view(-1, 1)
    n = torch.arange(8, dtype=torch.float64, device=device).view(1, -1)
    d = torch.cos(math.pi * (2 * n + 1) * k / 16) * math.sqrt(2 / 8)
    d[0] = d[0] / math.sqrt(2)
    return d.to(dtype)


def _blockwise(plane: Tensor, table: Tensor, d: Tensor) -> Tensor:
    """DCT, soft quantisation with ``table`` (n, 8, 8) and inverse DCT of an (n, H, W) plane (H, W multiples of 8)."""
    n, h, w = plane.shape
    b = plane.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coef = d @ b @ d.T
    t = table[:, None, None]
    coef = soft_round(coef / t) * t
    b = d.T @ coef @ d
    return b.permute(0, 1, 3, 2, 4).reshape(n, h, w)


def differentiable_jpeg(x: Tensor, quality: Tensor) -> Tensor:
    """A differentiable approximation of a baseline JPEG round trip of ``x`` (N, 1|3, H, W) in [0, 1]."""
    n, c, h, w = x.shape
    d = _dct_matrix(x.dtype, x.device)
    qy, qc = (quant_table_ints(quality.to(x.device), chroma=c).to(x.dtype) for c in (False, True))  # as libjpeg
    m = 16 if c == 3 else 8
    ph, pw = (-h) % m, (-w) % m
    v = F.pad(x * 255.0, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x * 255.0
    if c == 1:
        out = _blockwise(v[:, 0] - 128.0, qy, d)[:, None] + 128.0
    else:
        r, g, b = v[:, 0], v[:, 1], v[:, 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b
        y = _blockwise(y - 128.0, qy, d) + 128.0
        chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
        cbq = _blockwise(chroma[:, 0], qc, d)
        crq = _blockwise(chroma[:, 1], qc, d)
        chroma = F.interpolate(torch.stack([cbq, crq], 1), scale_factor=2, mode="bilinear", align_corners=False)
        cb, cr = chroma[:, 0], chroma[:, 1]
        out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (out[:, :, :h, :w] / 255.0).clamp(0.0, 1.0)


def real_jpeg(x: Tensor, quality: Tensor) -> Tensor:
    """The real codec's round trip of each image of ``x`` (N, 1|3, H, W) at its ``quality`` (no gradient), by the
    batched torch codec (Pillow's pixels; see the module docstring). The codec's exact integer arithmetic needs
    float64, which Apple's MPS backend lacks: there it runs on the CPU."""
    if x.device.type == "mps":
        return real_jpeg(x.detach().cpu(), quality.cpu()).to(x.device)
    samples = (x.detach().clamp(0, 1) * 255.0).round()
    return jpeg_roundtrip(samples, quality.to(x.device)).to(x.dtype) / 255.0


class JPEG(RandomTransform):
    """JPEG compression at a random quality.

    Args:
        quality: (min, max) JPEG quality, inclusive, within 1..95.
    """

    name = "jpeg"
    grad = "approx"
    call_cost = 0.8
    chunk_values = None
    options = ("quality",)

    def __init__(self, *, quality: tuple[int, int] = (55, 95)) -> None:
        super().__init__()
        self.quality = check_int_range("quality", quality, 1, 95)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> JPEGParams:
        return JPEGParams(quality=Draws(n, generator).randint(*self.quality)).to(device or "cpu")

    def transform(self, x: Tensor, p: Params) -> Tensor:
        return real_jpeg(x, expect(p, JPEGParams).quality)

    def apply_surrogate(self, x: Tensor, p: Params) -> Tensor:
        return differentiable_jpeg(x, expect(p, JPEGParams).quality)
