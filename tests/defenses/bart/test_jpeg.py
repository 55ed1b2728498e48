from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bastion.defenses.bart import JPEG
from bastion.defenses.bart.jpeg import JPEGParams
from bastion.defenses.bart.jpeg_codec import jpeg_roundtrip, range_limit_
from bastion.errors import ConfigError

from .pillow_jpeg import pillow_jpeg


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
    """The reference codec (``pillow_jpeg``) encodes grayscale images of one quality as one tiled JPEG; every tile
    must decode exactly as the image encoded alone (padding to whole 8x8 blocks by edge replication, as libjpeg
    pads a single image)."""
    g = torch.Generator().manual_seed(3)
    for shape in [(60, 1, 28, 28), (30, 1, 30, 30), (20, 1, 9, 17), (5, 1, 1, 1), (12, 1, 32, 40), (3, 1, 70, 600)]:
        x = torch.rand(shape, generator=g)
        x[: shape[0] // 2] = torch.nn.functional.interpolate(  # smooth images too (most JPEG content)
            torch.rand(shape[0] // 2, 1, 4, 4, generator=g), size=shape[2:], mode="bilinear", align_corners=False)
        q = torch.randint(50, 53, (shape[0],), generator=g)  # a few qualities: several images per tile sheet
        y = pillow_jpeg(x, q)
        for i in range(shape[0]):
            u8 = np.round(x[i, 0].numpy() * 255).astype(np.uint8)
            np.testing.assert_array_equal(y[i, 0].numpy(), pillow_round_trip(u8, int(q[i])).astype(np.float32))


def _samples(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Integer samples 0..255: half noise, half smooth (most JPEG content), plus flat and binary images."""
    x = torch.rand(shape, generator=g)
    m = shape[0] // 4
    x[:m] = torch.nn.functional.interpolate(torch.rand(m, shape[1], 3, 3, generator=g), size=shape[2:],
                                            mode="bilinear", align_corners=False)
    x[m : m + 2] = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    x[m + 2 : 2 * m] = (x[m + 2 : 2 * m] > 0.5).float()
    return (x * 255).round()


@pytest.mark.parametrize("channels", [1, 3])
def test_torch_codec_equals_libjpeg(channels: int) -> None:
    """The batched torch codec reproduces Pillow's libjpeg round trip exactly: every size class (multiples of
    8 and 16 or not, 1-pixel and 2-pixel-wide images, whose chroma libjpeg upsamples by replication) and
    qualities 1..100 (integer table scaling below 50, the 255 clamp)."""
    g = torch.Generator().manual_seed(channels)
    for h, w in [(32, 32), (28, 28), (17, 23), (40, 33), (1, 1), (2, 3), (5, 4), (9, 16)]:
        x = _samples((24, channels, h, w), g)
        q = torch.randint(1, 101, (24,), generator=g)
        q[:4] = torch.tensor([1, 49, 50, 100])
        got = jpeg_roundtrip(x, q)
        assert got.dtype == torch.float64 and got.shape == x.shape
        torch.testing.assert_close(got.float(), pillow_jpeg(x / 255, q) * 255, rtol=0, atol=0)


def test_torch_codec_chunks_and_batches_agree() -> None:
    """A batch larger than one internal chunk equals each image coded alone (and Pillow)."""
    g = torch.Generator().manual_seed(5)
    x = _samples((400, 3, 20, 20), g)
    q = torch.randint(40, 96, (400,), generator=g)
    y = jpeg_roundtrip(x, q)
    for i in (0, 1, 200, 327, 399):
        assert torch.equal(y[i : i + 1], jpeg_roundtrip(x[i : i + 1], q[i : i + 1]))
    assert torch.equal(y.float(), pillow_jpeg(x / 255, q) * 255)


def test_range_limit_is_libjpegs_table() -> None:
    """libjpeg's post-IDCT table (jdmaster.c prepare_range_limit_table), built literally and indexed by
    ``v & 1023``, against :func:`range_limit_` over the values an IDCT can produce, wrap-around included."""
    simple = [0] * 256 + list(range(256))  # sample_range_limit[-256..255]
    post = simple[256 + 128 :] + [255] * (512 - 128) + [0] * (512 - 128) + simple[256 : 256 + 128]
    assert len(post) == 1024
    v = torch.arange(-3000, 3000, dtype=torch.float64)
    expect = torch.tensor([post[int(i) & 1023] for i in v], dtype=torch.float64)
    assert torch.equal(range_limit_(v.clone()), expect)
    inside = torch.arange(-512, 512, dtype=torch.float64)  # the usual path (no wrap-around needed)
    assert torch.equal(range_limit_(inside.clone()), (inside + 128).clamp(0, 255))


def test_codec_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="1- or 3-channel"):
        jpeg_roundtrip(torch.zeros(2, 2, 8, 8), torch.tensor([50, 50]))
    with pytest.raises(ConfigError, match="quality must have shape"):
        jpeg_roundtrip(torch.zeros(2, 1, 8, 8), torch.tensor([50]))
