"""Pillow's JPEG codec image by image: the reference the batched torch codec of bastion's BaRT is tested against."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def pillow_jpeg(x: Tensor, quality: Tensor) -> Tensor:
    """Pillow's codec, the reference of :func:`real_jpeg`: each image of ``x`` (N, 1|3, H, W) encoded and decoded
    by Pillow (no gradient).

    Grayscale images of the same quality are encoded together, tiled into one JPEG: a grayscale JPEG is coded
    in independent 8x8 blocks (no subsampling; baseline decoding has no cross-block smoothing), so once each
    image is padded to whole blocks by edge replication, exactly as libjpeg pads a single image, every tile
    decodes to the same pixels as the image alone. (Colour JPEGs are not tiled: 4:2:0 chroma upsampling
    reads the neighbouring blocks.)
    """
    n, c, h, w = x.shape
    arr = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(arr)
    qs = quality.tolist()
    if c == 1:
        by_quality: dict[int, list[int]] = {}
        for i, q in enumerate(qs):
            by_quality.setdefault(int(q), []).append(i)
        for q, ids in by_quality.items():
            out[ids, 0] = _tiled_gray_roundtrip(arr[ids, 0], q)
    else:
        hwc = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
        dec = np.empty_like(hwc)
        for i, q in enumerate(qs):  # a C codec taking one image per call (see module docstring)
            dec[i] = _roundtrip(hwc[i], "RGB", int(q))
        out = dec.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype) / 255.0


def _roundtrip(a: np.ndarray, mode: str, quality: int) -> np.ndarray:
    """Encode ``a`` (H, W) or (H, W, 3) uint8 as a JPEG with Pillow's defaults at ``quality``, decode it."""
    img = Image.fromarray(a, mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    # decode with the JPEG decoder directly (the settings Image.open uses for a baseline file, without the
    # marker parsing in Python)
    return np.asarray(Image.frombytes(mode, img.size, buf.getvalue(), "jpeg", (mode, "")))


def _tiled_gray_roundtrip(imgs: np.ndarray, quality: int, *, max_width: int = 2048) -> np.ndarray:
    """(m, H, W) uint8 grayscale images through one JPEG of them tiled (see :func:`pillow_jpeg`)."""
    m, h, w = imgs.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    if m == 1 or wp > max_width:
        return np.stack([_roundtrip(np.ascontiguousarray(im), "L", quality) for im in imgs])
    cols = min(m, max_width // wp)
    rows = -(-m // cols)
    cells = np.zeros((rows * cols, hp, wp), dtype=np.uint8)
    cells[:m, :h, :w] = imgs
    if hp > h:  # libjpeg's padding: the last row repeated down, then the last column repeated right
        cells[:m, h:, :w] = imgs[:, h - 1 : h, :]
    if wp > w:
        cells[:m, :, w:] = cells[:m, :, w - 1 : w]
    canvas = cells.reshape(rows, cols, hp, wp).transpose(0, 2, 1, 3).reshape(rows * hp, cols * wp)
    dec = _roundtrip(np.ascontiguousarray(canvas), "L", quality)
    return dec.reshape(rows, hp, cols, wp).transpose(0, 2, 1, 3).reshape(rows * cols, hp, wp)[:m, :h, :w]
