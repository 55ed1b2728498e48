"""Per-image scikit-image/NumPy versions of the BaRT groups (the paper's way of running the barrage).

Used by ``bart_speed.py`` as the baseline: each image of a batch goes through the same draw (groups,
order, parameters) as the batched torch barrage, one image and one transform at a time, with the
scikit-image (or SciPy/NumPy/Pillow) function the paper's code used. Random noise (``noise``, ``fft``) is
drawn from NumPy, so values differ from bastion's keyed noise, but the work done is the same.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import color, exposure, filters, restoration, transform, util

from bastion.defenses.bart import BarrageDraw, BaRT
from bastion.defenses.bart.color_space import RANGES, SPACES
from bastion.defenses.bart.contrast import CLIP_LIMITS
from bastion.defenses.bart.contrast import KINDS as CONTRAST_KINDS
from bastion.defenses.bart.denoise import KINDS as DENOISE_KINDS
from bastion.defenses.bart.denoise import WAVELET_METHODS
from bastion.defenses.bart.noise import KINDS as NOISE_KINDS


def _row(params, i: int) -> dict:
    return {k: v[i] for k, v in params.__dict__.items()}


def color_precision(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    c = img.shape[2]
    q = (p["levels"][:c].numpy() - 1).astype(np.float64)
    return np.round(img * q) / q


def jpeg(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    arr = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(p["quality"]))
    buf.seek(0)
    out = np.asarray(Image.open(buf), dtype=np.float64) / 255
    return out.reshape(img.shape)


def swirl(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    return transform.swirl(img, center=(float(p["cx"]) * (w - 1), float(p["cy"]) * (h - 1)),
                           strength=float(p["strength"]), radius=float(p["radius"]) * max(h, w), order=1,
                           mode="reflect")


def noise(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    kind = NOISE_KINDS[int(p["kind"])]
    kw: dict = {}
    if kind in ("gaussian", "speckle"):
        kw = {"var": float(p["var"])}
    elif kind in ("salt", "pepper"):
        kw = {"amount": float(p["amount"])}
    elif kind == "s&p":
        kw = {"amount": float(p["amount"]), "salt_vs_pepper": float(p["salt_vs_pepper"])}
    return util.random_noise(img, mode=kind, rng=rng, **kw)


def fft(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        f = np.fft.fft2(img[..., c])
        keep = rng.random(f.shape) >= float(p["fraction"][min(c, 2)])
        keep[0, 0] = True
        out[..., c] = np.real(np.fft.ifft2(f * keep))
    return np.clip(out, 0, 1)


def zoom(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = float(p["scale"])
    ch, cw = max(1, round(s * h)), max(1, round(s * w))
    top, left = round(float(p["v"]) * (h - ch)), round(float(p["u"]) * (w - cw))
    return transform.resize(img[top : top + ch, left : left + cw], (h, w), order=1, mode="edge")


_SK_SPACES = {"hsv": (color.rgb2hsv, color.hsv2rgb, (1.0, 1.0, 1.0)), "lab": (color.rgb2lab, color.lab2rgb, RANGES["lab"]),
              "xyz": (color.rgb2xyz, color.xyz2rgb, RANGES["xyz"]), "yuv": (color.rgb2yuv, color.yuv2rgb, RANGES["yuv"])}


def color_space(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    name = SPACES[int(p["space"])]
    fwd, inv, rg = _SK_SPACES[name]
    z = fwd(img)
    c = int(p["channel"])
    z[..., c] += float(p["delta"]) * rg[c]
    if name == "hsv":
        z[..., 0] = np.mod(z[..., 0], 1.0)
        z[..., 1:] = np.clip(z[..., 1:], 0, 1)
    elif name == "lab":
        z[..., 0] = np.clip(z[..., 0], 0, 100)
    return np.clip(inv(z), 0, 1)


def contrast(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    kind = CONTRAST_KINDS[int(p["kind"])]
    if kind == "equalize":
        return exposure.equalize_hist(img, nbins=int(p["nbins"]))
    if kind == "clahe":
        g = int(p["grid"])
        ks = (max(1, img.shape[0] // g), max(1, img.shape[1] // g))
        out = exposure.equalize_adapthist(img[..., 0] if img.shape[2] == 1 else img, kernel_size=ks,
                                          clip_limit=CLIP_LIMITS[int(p["clip"])])
        return out.reshape(img.shape)
    lo, hi = np.percentile(img, (float(p["low"]), float(p["high"])))
    return exposure.rescale_intensity(img, in_range=(lo, hi)) if hi > lo else img


def greyscale(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    w = p["weights"].numpy()
    g = (img * w).sum(-1, keepdims=True)
    m = p["mask"].numpy().astype(np.float64) * float(p["amount"])
    return np.clip(img + m * (g - img), 0, 1)


def denoise(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    kind = DENOISE_KINDS[int(p["kind"])]
    ca = -1
    im = img
    if kind == "gaussian":
        return filters.gaussian(im, sigma=float(p["sigma"]), mode="nearest", channel_axis=ca, preserve_range=True)
    if kind == "median":
        k = int(p["size"])
        return ndi.median_filter(im, size=(k, k, 1), mode="nearest")
    if kind == "mean":
        k = int(p["size"])
        return ndi.uniform_filter(im, size=(k, k, 1), mode="nearest")
    if kind == "bilateral":
        out = restoration.denoise_bilateral(im[..., 0] if im.shape[2] == 1 else im, sigma_color=float(p["sigma_color"]),
                                            sigma_spatial=float(p["sigma_spatial"]),
                                            channel_axis=None if im.shape[2] == 1 else -1)
        return out.reshape(img.shape)
    if kind == "tv":
        return restoration.denoise_tv_chambolle(im, weight=float(p["weight"]), channel_axis=ca)
    if kind == "wavelet":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = restoration.denoise_wavelet(im, method=WAVELET_METHODS[int(p["method"])], channel_axis=ca,
                                              rescale_sigma=True)
        return np.nan_to_num(np.clip(out, 0, 1))
    return restoration.denoise_nl_means(im, h=float(p["h"]), patch_size=int(p["patch"]),
                                        patch_distance=int(p["distance"]), channel_axis=ca).reshape(img.shape)


FUNCS = {"color_precision": color_precision, "jpeg": jpeg, "swirl": swirl, "noise": noise, "fft": fft, "zoom": zoom,
         "color_space": color_space, "contrast": contrast, "greyscale": greyscale, "denoise": denoise}


def barrage_per_image(x: np.ndarray, bart: BaRT, draw: BarrageDraw, *, seed: int = 0) -> np.ndarray:
    """The draw applied image by image with scikit-image; ``x`` is (N, H, W, C) float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(x)
    order = draw.order.tolist()
    for i in range(x.shape[0]):
        img = x[i]
        for j in order[i]:
            name = draw.names[j]
            img = np.clip(FUNCS[name](img, _row(draw.params[name], i), rng), 0, 1)
        out[i] = img
    return out
