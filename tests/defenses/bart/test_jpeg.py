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


def test_grayscale_tiling_equals_one_image_per_call() -> None:
    """Grayscale images of one quality go through one tiled JPEG; every tile must decode exactly as the image
    encoded alone (padding to whole 8x8 blocks by edge replication, as libjpeg pads a single image)."""
    g = torch.Generator().manual_seed(3)
    for shape in [(60, 1, 28, 28), (30, 1, 30, 30), (20, 1, 9, 17), (5, 1, 1, 1), (12, 1, 32, 40), (3, 1, 70, 600)]:
        x = torch.rand(shape, generator=g)
        x[: shape[0] // 2] = torch.nn.functional.interpolate(  # smooth images too (most JPEG content)
            torch.rand(shape[0] // 2, 1, 4, 4, generator=g), size=shape[2:], mode="bilinear", align_corners=False)
        q = torch.randint(50, 53, (shape[0],), generator=g)  # a few qualities: several images per tile sheet
        y = JPEG().apply(x, JPEGParams(quality=q))
        for i in range(shape[0]):
            u8 = np.round(x[i, 0].numpy() * 255).astype(np.uint8)
            np.testing.assert_array_equal(y[i, 0].numpy(), pillow_round_trip(u8, int(q[i])).astype(np.float32))
