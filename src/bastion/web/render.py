"""Small images for the page, as PNG data URLs: grayscale pixels, a diverging perturbation map and
Grad-CAM overlays. Pure functions over tensors and arrays (Pillow encodes; no matplotlib in the request path).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from torch import Tensor


def png_data_url(pixels: np.ndarray) -> str:
    """Encode ``pixels`` (H, W) or (H, W, 3), uint8, as a ``data:image/png;base64,...`` URL."""
    if pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 (rounded, clipped)."""
    out: np.ndarray = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def quantized(x: Tensor) -> Tensor:
    """``x`` in [0, 1] rounded as :func:`to_uint8` rounds it (to multiples of 1/255): what a PNG of it holds."""
    return (x.detach().clamp(0.0, 1.0) * 255.0 + 0.5).floor() / 255.0


def image_array(x: Tensor) -> np.ndarray:
    """One image (C, H, W) in [0, 1] to (H, W) or (H, W, 3) floats."""
    a = x.detach().to("cpu").float().numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0))


def image_url(x: Tensor) -> str:
    """One image (C, H, W) in [0, 1] as a PNG data URL at its own resolution (the page scales it up)."""
    return png_data_url(to_uint8(image_array(x)))


def shrink(a: np.ndarray, longest: int) -> np.ndarray:
    """``a`` (H, W) or (H, W, 3), uint8 or float32, downscaled (area average) so that its longer side is at most
    ``longest``."""
    h, w = a.shape[:2]
    if max(h, w) <= longest:
        return a
    scale = longest / max(h, w)
    small = Image.fromarray(a).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(small, dtype=a.dtype)


def thumbnail_url(x: Tensor, side: int) -> str:
    """One image (C, H, W) in [0, 1] as a PNG data URL, shrunk (area average) to at most ``side`` pixels per side."""
    return png_data_url(shrink(to_uint8(image_array(x)), side))


def diverging(delta: np.ndarray, scale: float) -> np.ndarray:
    """A blue-white-red map of ``delta`` (H, W) divided by ``scale``: white is 0, red +scale, blue -scale.

    Returns (H, W, 3) floats in [0, 1].
    """
    v = np.clip(delta / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(delta)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    r = 1.0 - 0.85 * neg
    g = 1.0 - 0.85 * pos - 0.75 * neg
    b = 1.0 - 0.85 * pos
    return np.stack([r, g, b], axis=-1)


def perturbation_url(x_adv: Tensor, x: Tensor) -> tuple[str, float]:
    """The perturbation ``x_adv - x`` of one image, magnified so its largest entry is full colour.

    Returns the PNG data URL and the scale (the largest absolute change; the magnification is ``1/scale``).
    Colour images are shown by their channel mean.
    """
    d = (x_adv - x).detach().to("cpu").float()
    scale = float(d.abs().max())
    return png_data_url(to_uint8(diverging(d.mean(0).numpy(), scale))), scale


def heat(v: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white ramp for values in [0, 1]; returns (..., 3)."""
    v = np.clip(v, 0.0, 1.0)
    return np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)


def cam_overlay_url(x: Tensor, cam_map: Tensor, *, zoom: int = 4, alpha: float = 0.55) -> str:
    """Overlay a Grad-CAM map (H', W') in [0, 1], already at ``zoom`` times the image size, on the image
    (C, H, W) shown in gray and enlarged ``zoom`` times by pixel repetition."""
    img = image_array(x)
    gray = img if img.ndim == 2 else img.mean(-1)
    base = np.repeat(np.repeat(gray, zoom, 0), zoom, 1)[..., None] * np.ones(3)
    m = cam_map.detach().to("cpu").float().numpy()
    if m.shape != base.shape[:2]:
        raise ValueError(f"the CAM map has shape {m.shape}, expected {base.shape[:2]}")
    out = (1 - alpha) * base + alpha * heat(m)
    return png_data_url(to_uint8(out))
