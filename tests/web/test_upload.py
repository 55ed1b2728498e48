"""Upload decoding: only PNG/JPEG by magic bytes, size and pixel limits, MNIST-like preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.errors import DataError
from bastion.web.context import DemoContext, Limits
from bastion.web.errors import PayloadTooLargeError, UnsupportedMediaError
from bastion.web.handlers import decode_upload, upload
from bastion.web.upload import mnist_like, sniff

from .conftest import digit_array, encode, gif_bytes, png_header_only, real_bomb_png


def test_png_dark_background_is_centred_not_inverted(ctx: DemoContext) -> None:
    arr = digit_array(offset=(25, -30))  # off-centre on purpose
    out = upload(encode(arr, "PNG"), "image/png", ctx)
    assert out["inverted"] is False
    assert out["original_size"] == [120, 120]
    x = torch.tensor(out["pixels"]).reshape(28, 28)
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    rows = torch.nonzero(x.sum(1) > 0.1).flatten()
    assert int(rows.max() - rows.min() + 1) in (19, 20, 21)  # the digit's longer side is scaled to 20 px
    mass = x / x.sum()
    cy = float((mass.sum(1) * torch.arange(28)).sum())
    cx = float((mass.sum(0) * torch.arange(28)).sum())
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0  # centred by centre of mass
    assert out["image"].startswith("data:image/png;base64,")


def test_light_background_jpeg_is_inverted(ctx: DemoContext) -> None:
    data = encode(np.stack([digit_array(light_background=True)] * 3, -1), "JPEG", quality=90)
    x = decode_upload(data, "image/jpeg", ctx)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) < 0.05  # background became black
    assert float(x.max()) > 0.9  # the stroke became white


def test_transparent_png_is_composited_onto_white_then_inverted(ctx: DemoContext) -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[10:54, 28:36, 3] = 255  # an opaque black stroke on a fully transparent background
    out = upload(encode(rgba, "PNG"), None, ctx)
    assert out["inverted"] is True
    assert max(out["pixels"]) > 0.9


def test_blank_image_becomes_black(ctx: DemoContext) -> None:
    x = decode_upload(encode(np.full((40, 40), 255, np.uint8), "PNG"), "image/png", ctx)
    assert float(x.abs().max()) == 0.0


def test_large_jpeg_within_limits_is_decoded_at_reduced_scale(ctx: DemoContext) -> None:
    data = encode(np.stack([digit_array(size=2000)] * 3, -1), "JPEG", quality=70)
    x = decode_upload(data, "application/octet-stream", ctx)
    assert x.shape == (1, 1, 28, 28) and float(x.max()) > 0.9


def test_magic_bytes_decide_not_the_declared_type(ctx: DemoContext) -> None:
    png = encode(digit_array(), "PNG")
    assert decode_upload(png, "image/jpeg", ctx).shape == (1, 1, 28, 28)  # mislabelled but really PNG: fine
    with pytest.raises(UnsupportedMediaError, match="GIF"):
        decode_upload(gif_bytes(), "image/png", ctx)  # claims PNG, is GIF


@pytest.mark.parametrize(
    "data, what",
    [(b"GIF89a" + b"\x00" * 20, "GIF"), (b"BM" + b"\x00" * 40, "BMP"), (b"%PDF-1.4 hello", "PDF"),
     (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "text"), (b"hello world", "something else"),
     (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP")],
)
def test_other_formats_are_refused_by_magic(ctx: DemoContext, data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedMediaError, match=what):
        decode_upload(data, None, ctx)


def test_declared_non_image_type_is_refused(ctx: DemoContext) -> None:
    with pytest.raises(UnsupportedMediaError, match="text/plain"):
        decode_upload(encode(digit_array(), "PNG"), "text/plain; charset=utf-8", ctx)


def test_too_many_bytes(ctx: DemoContext) -> None:
    small = DemoContext(limits=Limits(max_upload_bytes=1000))
    data = encode(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "PNG")
    assert len(data) > 1000
    with pytest.raises(PayloadTooLargeError, match="limit is 1,000 bytes"):
        decode_upload(data, "image/png", small)


def test_decompression_bomb_header_is_refused_before_decoding(ctx: DemoContext) -> None:
    # 30000 x 30000 = 900M pixels: Pillow's own guard (DecompressionBombError) fires while opening
    with pytest.raises(PayloadTooLargeError, match="pixels"):
        decode_upload(png_header_only(30000, 30000), "image/png", ctx)
    # 5000 x 5000 = 25M pixels: under Pillow's default but over the demo's 4096 x 4096 limit
    with pytest.raises(PayloadTooLargeError, match="limit is 16,777,216 pixels"):
        decode_upload(png_header_only(5000, 5000), "image/png", ctx)


def test_real_decompression_bomb_is_refused(ctx: DemoContext) -> None:
    data = real_bomb_png(5000)
    assert len(data) < 100_000  # tiny on disk ...
    with pytest.raises(PayloadTooLargeError, match="5000x5000"):  # ... 25M pixels decoded: refused
        decode_upload(data, "image/png", ctx)


def test_truncated_and_empty_files(ctx: DemoContext) -> None:
    png = encode(digit_array(), "PNG")
    with pytest.raises(DataError, match="could not decode"):
        decode_upload(png[: len(png) // 2], "image/png", ctx)
    with pytest.raises(DataError, match="empty"):
        decode_upload(b"", "image/png", ctx)


def test_sniff() -> None:
    assert sniff(b"\x89PNG\r\n\x1a\n...") == "PNG"
    assert sniff(b"\xff\xd8\xff\xe0...") == "JPEG"


def test_mnist_like_keeps_range_and_size() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = rng.random((rng.integers(5, 90), rng.integers(5, 90))).astype(np.float32)
        out, _ = mnist_like(a)
        assert out.shape == (28, 28) and out.min() >= 0 and out.max() <= 1
