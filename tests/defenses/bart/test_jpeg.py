from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from bastion.defenses.bart import JPEG
from bastion.defenses.bart.jpeg import JPEGParams


def pillow_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64) / 255


def test_apply_is_the_real_codec(images: torch.Tensor) -> None:
    t = JPEG()
    p = t.sample(images.shape[0], generator=torch.Generator().manual_seed(0))
    y = t.apply(images, p)
    for i in range(images.shape[0]):
        u8 = np.round(images[i].numpy() * 255).astype(np.uint8)
        img = u8[0] if u8.shape[0] == 1 else u8.transpose(1, 2, 0)
        ref = pillow_round_trip(img, int(p.quality[i]))
        got = y[i].numpy()
        np.testing.assert_array_equal(got[0] if got.shape[0] == 1 else got.transpose(1, 2, 0), ref)


def test_lower_quality_distorts_more(gray: torch.Tensor) -> None:
    t = JPEG(quality=(5, 95))
    err = [float((t.apply(gray, JPEGParams(quality=torch.full((8,), q))) - gray).abs().mean()) for q in (10, 50, 95)]
    assert err[0] > err[1] > err[2]


def test_differentiable_jpeg_tracks_the_codec(images: torch.Tensor) -> None:
    """The surrogate is a torch JPEG with soft rounding: close to the codec (documented: mean abs < 0.012)."""
    t = JPEG()
    p = t.sample(images.shape[0], generator=torch.Generator().manual_seed(2))
    real, sur = t.apply(images, p), t.apply_surrogate(images, p)
    codec_change = float((real - images).abs().mean())
    gap = float((real - sur).abs().mean())
    assert gap < 0.012 and gap < 0.5 * codec_change
