"""Turning an uploaded (or drawn) picture into a model input, safely.

Checks, in order, before any pixel is decoded:

1. the size in bytes (at most ``Limits.max_upload_bytes``; the server also refuses a larger
   ``Content-Length`` before reading and stops reading past the limit);
2. the declared content type, when there is one, must be a PNG/JPEG type or ``application/octet-stream``;
3. the magic bytes must be PNG (``89 50 4E 47 0D 0A 1A 0A``) or JPEG (``FF D8 FF``): the declared type is
   never trusted;
4. Pillow opens the file restricted to that one format and reads only its header; an image with more than
   ``Limits.max_pixels`` pixels is refused (the decompression-bomb guard; Pillow's own
   ``DecompressionBombWarning``/``DecompressionBombError`` are caught too).

Only then is it decoded. A JPEG is decoded at a reduced scale when it is large (``Image.draft``).

MNIST-like preprocessing (for 1-channel models; documented in the page):

* EXIF orientation is applied; transparency is composited onto white; the image becomes grayscale in [0, 1].
* If the border is light (median of the outermost pixels > 0.5), the image is inverted: MNIST digits are
  white on black.
* The border's median level is taken as the background and subtracted; the contrast is stretched to [0, 1].
* The digit's bounding box (pixels above 0.2) is cropped, resized so its longer side is 20/28 of the input
  size (as in MNIST), and placed in a black square so that its centre of mass is at the centre.
* A blank image (no contrast) becomes an all-black input.

For 3-channel models the image is simply resized to the input size.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from bastion.errors import DataError
from bastion.web.errors import PayloadTooLargeError, UnsupportedMediaError
from bastion.web.render import shrink

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

#: declared content types accepted (the magic bytes decide the real format)
ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/pjpeg", "application/octet-stream")

_OTHER_FORMATS = (
    (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"), (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
    (b"\x00\x00\x01\x00", "an ICO image"), (b"PK\x03\x04", "a ZIP archive"),
)


def sniff(data: bytes) -> str:
    """``"PNG"`` or ``"JPEG"`` from the magic bytes; anything else raises :class:`UnsupportedMediaError`."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    what = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
    if what is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        what = "a WebP image"
    if what is None and data.lstrip()[:1] == b"<":
        what = "text (HTML/XML/SVG)"
    raise UnsupportedMediaError(
        f"only PNG and JPEG images are accepted; this file looks like {what or 'something else'}")


def check_declared_type(content_type: str | None) -> None:
    """Refuse a declared content type that is not an image type we accept (an absent one is fine)."""
    if not content_type:
        return
    base = content_type.split(";", 1)[0].strip().lower()
    if base and base not in ACCEPTED_TYPES:
        raise UnsupportedMediaError(f"only PNG and JPEG images are accepted; the upload was declared as {base!r}")


def open_image(data: bytes, *, max_bytes: int, max_pixels: int, draft_size: int = 256) -> Image.Image:
    """Check and decode ``data`` (PNG/JPEG only) into a Pillow image, guarding against decompression bombs.

    Raises:
        PayloadTooLargeError: too many bytes or pixels.
        UnsupportedMediaError: not PNG/JPEG by its magic bytes.
        DataError: empty, truncated or corrupt.
    """
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the upload is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    if not data:
        raise DataError("the upload is empty")
    fmt = sniff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
            w, h = im.size
            if w < 1 or h < 1:
                raise DataError(f"the {fmt} image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise PayloadTooLargeError(
                    f"the {fmt} image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} pixels")
            if fmt == "JPEG" and max(w, h) > 2 * draft_size:
                im.draft("L", (draft_size, draft_size))  # decode at 1/2, 1/4 or 1/8 scale
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLargeError(f"the image has too many pixels (decompression-bomb guard): {e}") from None
    except (PayloadTooLargeError, DataError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise DataError(f"could not decode the {fmt} image (truncated or corrupt?): {e}") from None
    return im


def to_grayscale(im: Image.Image) -> np.ndarray:
    """EXIF-oriented, transparency composited onto white, (H, W) float32 in [0, 1]."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im.convert("F"), dtype=np.float32)
        hi = float(a.max()) if a.size else 1.0
        return a / (65535.0 if hi > 255 else 255.0)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def mnist_like(a: np.ndarray, size: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, bool]:
    """MNIST-style normalisation of a grayscale image (see the module docstring).

    Returns the (H, W) float32 image in [0, 1] and whether it was inverted.
    """
    h_out, w_out = size
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    inverted = bool(np.median(border) > 0.5)
    if inverted:
        a = 1.0 - a
        border = 1.0 - border
    bg = float(np.median(border))
    a = np.clip(a - bg, 0.0, None)
    hi = float(a.max())
    if hi < 1e-3:
        return np.zeros(size, dtype=np.float32), inverted
    a = a / hi
    rows = np.flatnonzero((a > 0.2).any(1))
    cols = np.flatnonzero((a > 0.2).any(0))
    a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = max(1, round(20 * min(h_out, w_out) / 28))
    scale = box / max(a.shape)
    nh, nw = max(1, round(a.shape[0] * scale)), max(1, round(a.shape[1] * scale))
    small = np.asarray(Image.fromarray(a.astype(np.float32)).resize((nw, nh), Image.Resampling.LANCZOS))
    small = np.clip(small, 0.0, 1.0)
    total = float(small.sum())
    if total > 0:
        cy = float((small.sum(1) * np.arange(nh)).sum() / total)
        cx = float((small.sum(0) * np.arange(nw)).sum() / total)
    else:
        cy, cx = (nh - 1) / 2, (nw - 1) / 2
    top = int(np.clip(round((h_out - 1) / 2 - cy), 0, h_out - nh))
    left = int(np.clip(round((w_out - 1) / 2 - cx), 0, w_out - nw))
    out = np.zeros(size, dtype=np.float32)
    out[top : top + nh, left : left + nw] = small
    return out, inverted


def image_to_tensor(im: Image.Image, shape: tuple[int, int, int]) -> tuple[Tensor, bool]:
    """A decoded image as a model input (1, C, H, W) in [0, 1]; returns the tensor and whether it was inverted."""
    c, h, w = shape
    if c == 1:
        arr, inverted = mnist_like(shrink(to_grayscale(im), 512), (h, w))  # bounds the work that follows
        return torch.from_numpy(arr)[None, None].contiguous(), inverted
    if c == 3:
        im = ImageOps.exif_transpose(im) or im
        rgb = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        return torch.from_numpy(np.transpose(rgb, (2, 0, 1)).copy())[None].contiguous(), False
    raise DataError(f"uploads can be converted to 1 or 3 channels, not {c}")
