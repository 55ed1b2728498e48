"""A baseline JPEG round trip (encode, decode) on whole batches of tensors, integer-exact to libjpeg.

The lossy steps of a baseline JPEG are all integer arithmetic, which this module reproduces exactly as
libjpeg(-turbo) does them with its default settings (the ones Pillow uses for ``save(format="JPEG",
quality=q)`` and for decoding), so the output equals Pillow's pixel for pixel:

* encoder: RGB to YCbCr with libjpeg's 16-bit fixed-point coefficients (``jccolor.c``); 4:2:0 chroma
  subsampling by 2x2 sums with the alternating rounding bias 1, 2 (``jcsample.c``); edge padding as libjpeg pads
  (the input's last column repeated right, the last row repeated down; for the chroma planes the last
  *subsampled* row); the "islow" integer forward DCT (``jfdctint.c``); quantisation to the nearest integer, halves
  away from zero, by the quality-scaled tables of ``jcparam.c``;
* decoder: dequantisation and the islow integer inverse DCT (``jidctint.c``) with libjpeg's range-limit table;
  "fancy" (triangular) 2x upsampling of the chroma planes (``jdsample.c``); YCbCr to RGB with the fixed-point
  tables of ``jdcolor.c``.

Entropy coding is lossless and is skipped. Each pass of an integer DCT is linear with integer coefficients and
rounds once per output, so it is computed as a float64 matrix product (every partial sum is an integer below
2**53, hence exact) followed by that rounding. The tests check it against Pillow over many images and qualities.

Everything is batched (a loop over chunks of many images, never over single images) and runs on any device;
there is no gradient (the values are rounded at every step): :func:`bastion.defenses.bart.jpeg.differentiable_jpeg`
is the smooth stand-in.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from bastion.errors import ConfigError

_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32

# jfdctint.c / jidctint.c constants: FIX(c) = round(c * 2**13)
_CONST_BITS, _PASS1_BITS = 13, 2
_F0298, _F0390, _F0541, _F0765 = 2446, 3196, 4433, 6270
_F0899, _F1175, _F1501, _F1847 = 7373, 9633, 12299, 15137
_F1961, _F2053, _F2562, _F3072 = 16069, 16819, 20995, 25172


def _fdct_1d(d: list[int]) -> list[int]:
    """One pass of jfdctint.c on 8 values, before its final rounding (outputs 0 and 4 are unscaled sums)."""
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    z1 = (tmp12 + tmp13) * _F0541
    out = [0] * 8
    out[0], out[4] = tmp10 + tmp11, tmp10 - tmp11
    out[2], out[6] = z1 + tmp13 * _F0765, z1 - tmp12 * _F1847
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * _F1175
    z1, z2, z3, z4 = -z1 * _F0899, -z2 * _F2562, -z3 * _F1961 + z5, -z4 * _F0390 + z5
    out[7] = tmp4 * _F0298 + z1 + z3
    out[5] = tmp5 * _F2053 + z2 + z4
    out[3] = tmp6 * _F3072 + z2 + z3
    out[1] = tmp7 * _F1501 + z1 + z4
    return out


def _idct_1d(d: list[int]) -> list[int]:
    """One pass of jidctint.c on 8 (dequantised) coefficients, before its final rounding."""
    z2, z3 = d[2], d[6]
    z1 = (z2 + z3) * _F0541
    tmp2, tmp3 = z1 - z3 * _F1847, z1 + z2 * _F0765
    tmp0, tmp1 = (d[0] + d[4]) << _CONST_BITS, (d[0] - d[4]) << _CONST_BITS
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    tmp0, tmp1, tmp2, tmp3 = d[7], d[5], d[3], d[1]
    z1, z2, z3, z4 = tmp0 + tmp3, tmp1 + tmp2, tmp0 + tmp2, tmp1 + tmp3
    z5 = (z3 + z4) * _F1175
    tmp0, tmp1, tmp2, tmp3 = tmp0 * _F0298, tmp1 * _F2053, tmp2 * _F3072, tmp3 * _F1501
    z1, z2, z3, z4 = -z1 * _F0899, -z2 * _F2562, -z3 * _F1961 + z5, -z4 * _F0390 + z5
    tmp0, tmp1, tmp2, tmp3 = tmp0 + z1 + z3, tmp1 + z2 + z4, tmp2 + z2 + z3, tmp3 + z1 + z4
    return [tmp10 + tmp3, tmp11 + tmp2, tmp12 + tmp1, tmp13 + tmp0,
            tmp13 - tmp0, tmp12 - tmp1, tmp11 - tmp2, tmp10 - tmp3]


def _matrix(fn) -> list[list[int]]:  # noqa: ANN001
    """The integer matrix ``m`` with ``fn(d) == m @ d`` (each pass is linear)."""
    cols = [fn([int(i == j) for i in range(8)]) for j in range(8)]
    return [[cols[j][i] for j in range(8)] for i in range(8)]


@functools.lru_cache(maxsize=8)
def _dct_constants(device: torch.device) -> dict[str, Tensor]:
    f = torch.tensor(_matrix(_fdct_1d), dtype=torch.float64)
    i = torch.tensor(_matrix(_idct_1d), dtype=torch.float64)
    even = torch.tensor([1.0, 0, 0, 0, 1.0, 0, 0, 0], dtype=torch.float64)  # outputs 0 and 4 of a forward pass
    f1 = f * torch.where(even.bool(), 4.0, 1.0).view(8, 1)  # pass 1: outputs 0, 4 shifted left by PASS1_BITS
    s1 = torch.where(even.bool(), 0.0, float(_CONST_BITS - _PASS1_BITS))
    s2 = torch.where(even.bool(), float(_PASS1_BITS), float(_CONST_BITS + _PASS1_BITS))
    out = {
        "f1t": f1.T.contiguous(), "f2": f, "i1": i, "i1t": i.T.contiguous(),
        "f1_half": torch.where(s1 > 0, 2.0 ** (s1 - 1), 0.0), "f1_scale": 2.0**-s1,
        "f2_half": torch.where(s2 > 0, 2.0 ** (s2 - 1), 0.0), "f2_scale": 2.0**-s2,
    }
    return {k: v.to(device) for k, v in out.items()}


def quant_table_ints(quality: Tensor, *, chroma: bool) -> Tensor:
    """(n, 8, 8) float64 quantisation tables for each quality in 1..100, as ``jpeg_set_quality(q, TRUE)``
    scales them (integer arithmetic; baseline: clamped to 1..255)."""
    q = quality.to(torch.int64).clamp(1, 100)
    scale = torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q).view(-1, 1, 1)
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.int64, device=q.device).view(1, 8, 8)
    return torch.div(base * scale + 50, 100, rounding_mode="floor").clamp(1, 255).to(torch.float64)


def _round_shift(v: Tensor, half: Tensor | float, scale: Tensor | float) -> Tensor:
    """libjpeg's ``DESCALE``: ``(v + half) >> s`` (an arithmetic shift: floor), in place on integer-valued float64."""
    return v.add_(half).mul_(scale).floor_()


def _code_plane(plane: Tensor, table: Tensor) -> Tensor:
    """Level shift, forward DCT, quantisation, dequantisation, inverse DCT and range limit of an (n, H, W) plane
    of integer samples 0..255 (float64, H and W multiples of 8) with per-image tables ``table`` (n, 8, 8).

    The blocks stay where they are in the plane: a pass along the rows of the blocks is one product
    ``(n H W / 8, 8) @ (8, 8)``, a pass along their columns one batched ``(8, 8) @ (8, W)`` per block row."""
    k = _dct_constants(plane.device)
    n, h, w = plane.shape
    bh = h // 8
    rows, cols = (n * h * w // 8, 8), (n * bh, 8, w)
    x = _round_shift((plane - 128.0).view(rows) @ k["f1t"], k["f1_half"], k["f1_scale"])  # along each block row
    x = _round_shift(k["f2"] @ x.view(cols), k["f2_half"].view(8, 1), k["f2_scale"].view(8, 1)).view(rows)  # columns
    # quantise (the DCT's output is 8x the coefficient): |v| / (8 q) to the nearest integer, halves away from
    # zero, then dequantise. |v| / (8 q) is a fraction with denominator 8 q <= 2040, so adding 2**-20 before
    # the floor makes the product by the rounded reciprocal exact (its error is below 2**-30).
    t = table.view(n, 1, 8, 1, 8).expand(n, bh, 8, w // 8, 8).reshape(x.shape)
    mag = x.mul(t.reciprocal().mul_(0.125)).abs_().add_(0.5 + 2.0**-20).floor_()
    coef = torch.copysign(mag, x).mul_(t)
    s1, s2 = _CONST_BITS - _PASS1_BITS, _CONST_BITS + _PASS1_BITS + 3
    x = _round_shift(k["i1"] @ coef.view(cols), 2.0 ** (s1 - 1), 2.0**-s1)  # columns first
    x = _round_shift(x.view(rows) @ k["i1t"], 2.0 ** (s2 - 1), 2.0**-s2)  # then rows
    return range_limit_(x).view(n, h, w)


def range_limit_(v: Tensor) -> Tensor:
    """In place, libjpeg's post-IDCT range-limit table: entry ``v & 1023`` of a table that maps ``v`` in
    [-512, 512) to ``clamp(v + 128, 0, 255)`` (``v`` wraps around outside that range)."""
    lo, hi = torch.aminmax(v)
    if float(lo) < -512.0 or float(hi) >= 512.0:  # never seen on real images; the table's wrap-around
        v = torch.remainder(v.add_(512.0), 1024.0).sub_(512.0)
    return v.add_(128.0).clamp_(0.0, 255.0)


def _pad_edge(a: Tensor, rows: int, cols: int) -> Tensor:
    """Pad (n, H, W) to (n, rows, cols) by repeating the last column right, then the last row down."""
    n, h, w = a.shape
    if cols > w:
        a = torch.cat([a, a[:, :, -1:].expand(n, h, cols - w)], 2)
    if rows > h:
        a = torch.cat([a, a[:, -1:, :].expand(n, rows - h, a.shape[2])], 1)
    return a


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# jccolor.c / jdcolor.c: FIX(c) = round(c * 2**16)
_HALF = 32768
#: RGB -> (Y, Cb, Cr) before ``>> 16``, and the constants added (Cb and Cr: 128 << 16 and 0.5 - epsilon)
_TO_YCC = ((19595, 38470, 7471), (-11059, -21709, 32768), (32768, -27439, -5329))
_TO_YCC_OFFSET = (_HALF, 128 * 65536 + _HALF - 1, 128 * 65536 + _HALF - 1)
#: (Cb - 128, Cr - 128) -> the R, G, B offsets from Y before ``>> 16`` (each with 0.5 added)
_FROM_CBCR = ((0, 91881), (-22554, -46802), (116130, 0))


@functools.lru_cache(maxsize=8)
def _color_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    def f64(v: tuple) -> Tensor:
        return torch.tensor(v, dtype=torch.float64, device=device)

    return f64(_TO_YCC), f64(_TO_YCC_OFFSET).view(3, 1), f64(_FROM_CBCR)


def _downsample(c: Tensor, rows: int, cols: int) -> Tensor:
    """jcsample.c's h2v2_downsample of (n, H, W) after the input is edge-padded to (2 ceil(H/2), 2 * cols); then
    the result's last row is repeated down to ``rows`` rows (jcprepct.c's bottom padding)."""
    n, h, w = c.shape
    hh = _ceil_div(h, 2)
    c = _pad_edge(c, 2 * hh, 2 * cols)
    s = c[:, 0::2, 0::2] + c[:, 0::2, 1::2]
    s.add_(c[:, 1::2, 0::2]).add_(c[:, 1::2, 1::2])
    bias = torch.tensor([1.0, 2.0], dtype=c.dtype, device=c.device).repeat(cols // 2 + 1)[:cols]
    return _pad_edge(s.add_(bias).mul_(0.25).floor_(), rows, cols)


def _upsample(c: Tensor, h: int, w: int) -> Tensor:
    """jdsample.c's h2v2_fancy_upsample of the real (ceil(H/2), ceil(W/2)) part of ``c``, cropped to (H, W)
    (planes at most 2 samples wide are upsampled by plain replication, as libjpeg-turbo does).

    Output row 2i is ``3 c[i] + c[i-1]``, row 2i+1 ``3 c[i] + c[i+1]`` (edge rows repeated); then, across,
    column 2j is ``(3 s[j] + s[j-1] + 8) >> 4`` and column 2j+1 ``(3 s[j] + s[j+1] + 7) >> 4``."""
    c = c[:, : _ceil_div(h, 2), : _ceil_div(w, 2)]
    n, hh, ww = c.shape
    if ww <= 2:
        return c.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]
    s = torch.empty((n, hh, 2, ww), dtype=c.dtype, device=c.device)  # (row, which output row, column)
    torch.mul(c, 3.0, out=s[:, :, 0])
    s[:, :, 1] = s[:, :, 0]
    s[:, 1:, 0] += c[:, :-1]
    s[:, :1, 0] += c[:, :1]
    s[:, :-1, 1] += c[:, 1:]
    s[:, -1:, 1] += c[:, -1:]
    s = s.view(n, 2 * hh, ww)
    out = torch.empty((n, 2 * hh, ww, 2), dtype=c.dtype, device=c.device)  # (row, column, which output column)
    torch.mul(s, 3.0, out=out[..., 0])
    out[..., 1] = out[..., 0]
    out[:, :, 1:, 0] += s[:, :, :-1]
    out[:, :, :1, 0] += s[:, :, :1]
    out[:, :, :-1, 1] += s[:, :, 1:]
    out[:, :, -1:, 1] += s[:, :, -1:]
    out[..., 0] += 8.0
    out[..., 1] += 7.0
    return out.mul_(1.0 / 16.0).floor_().view(n, 2 * hh, 2 * ww)[:, :h, :w]


#: values per plane in one chunk of images: the working tensors stay cache-sized and are reused by the
#: allocator (fresh multi-megabyte temporaries, each paged in anew, made every step several times slower)
_CHUNK_VALUES = 1 << 17


def jpeg_roundtrip(x: Tensor, quality: Tensor) -> Tensor:
    """Pillow's ``save(format="JPEG", quality=q)`` then decode, for each image of ``x`` (N, 1|3, H, W) with
    integer sample values 0..255 (any float dtype) at its own ``quality`` (N,) in 1..100; returns the decoded
    samples (float64, integers 0..255). Grayscale is coded as one component, colour as YCbCr 4:2:0."""
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ConfigError(f"JPEG codes 1- or 3-channel images, got {c} channels")
    if quality.shape != (n,):
        raise ConfigError(f"quality must have shape ({n},), got {tuple(quality.shape)}")
    if n == 0:
        return x.to(torch.float64)
    quality = quality.to(x.device)
    qy, qc = quant_table_ints(quality, chroma=False), quant_table_ints(quality, chroma=True)
    step = max(1, _CHUNK_VALUES // (h * w))
    if n <= step:
        return _roundtrip(x, qy, qc)
    return torch.cat([_roundtrip(x[i : i + step], qy[i : i + step], qc[i : i + step]) for i in range(0, n, step)])


def _roundtrip(x: Tensor, qy: Tensor, qc: Tensor) -> Tensor:
    n, c, h, w = x.shape
    v = x.to(torch.float64).contiguous()  # the colour transform views it as (n, 3, h * w)
    hb, wb = 8 * _ceil_div(h, 8), 8 * _ceil_div(w, 8)
    if c == 1:
        return _code_plane(_pad_edge(v[:, 0], hb, wb), qy)[:, None, :h, :w]
    to_ycc, offset, from_cbcr = _color_constants(v.device)
    # every product and partial sum below is an integer under 2**53: the float64 products are exact
    ycc = (to_ycc @ v.view(n, 3, h * w)).add_(offset).mul_(2.0**-16).floor_().view(n, 3, h, w)
    y = _code_plane(_pad_edge(ycc[:, 0], hb, wb), qy)[:, :h, :w]
    ch, cw = 8 * _ceil_div(h, 16), 8 * _ceil_div(_ceil_div(w, 2), 8)  # chroma blocks of libjpeg's 4:2:0 layout
    chroma = _downsample(ycc[:, 1:].reshape(2 * n, h, w), ch, cw)  # (Cb, Cr) of each image, interleaved
    chroma = _upsample(_code_plane(chroma, qc.repeat_interleave(2, 0)), h, w).reshape(n, 2, h * w) - 128.0
    rgb = (from_cbcr @ chroma).add_(_HALF).mul_(2.0**-16).floor_().view(n, 3, h, w)
    return rgb.add_(y[:, None]).clamp_(0.0, 255.0)
