"""``coloured-mnist`` and ``coloured-mnist-5k``: MNIST digits in a random colour on a random colour background.

A colour version of MNIST built from the grey images, so that colour transforms (BaRT's colour-space and
greyscale groups, for instance) have something to act on while the task stays digit recognition. Each image
gets a background colour ``b`` and a foreground colour ``f`` (RGB, each channel uniform in [0, 1]), and its grey
ink ``a`` in [0, 1] blends them: ``x = (1 - a) * b + a * f``, a (3, 28, 28) image in [0, 1]. The colours do not
depend on the label (no spurious colour cue, unlike the biased variants below), and the pair is redrawn until
the two luminances (ITU-R BT.601 weights, what a greyscale transform keeps) differ by at least
:data:`MIN_LUMINANCE_GAP`, so the digit stays readable in grey.

This is the usual "Colored MNIST" construction: digits coloured in the foreground (Kim et al., "Learning Not to
Learn", CVPR 2019), on a coloured background (Bahng et al., "Learning De-biased Representations with Biased
Representations", ICML 2020; MNIST-M, Ganin & Lempitsky 2015, blends digits with colour photo patches instead),
or coloured by label for a spurious correlation (Arjovsky et al., "Invariant Risk Minimization", 2019). Here both
colours are random and independent of the label.

Reproducible: the colours of an image are a pure function of its index in its source split (``indices``) and of
the source, drawn with bastion's counter-based generator keyed by that index (:func:`bastion._rng.keyed_uniform`);
so an image has the same colours in any slice of the set, on any machine.

Sources:
    ``coloured-mnist-5k`` — the embedded ``mnist-5k`` (splits ``all``, ``train``, ``test``; no files needed).
    ``coloured-mnist`` — full MNIST from the IDX files (splits ``train``, ``test``; see :mod:`bastion.data.idx`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from bastion._rng import keyed_uniform
from bastion.data.base import ImageDataset

#: the smallest luminance difference between a digit's two colours
MIN_LUMINANCE_GAP = 0.25
#: colour pairs drawn per image; the first with a large enough gap is used (else the one with the largest gap)
CANDIDATES = 16
#: ITU-R BT.601 luma weights (what a greyscale conversion keeps)
LUMA = (0.299, 0.587, 0.114)
_SEED = 24
#: the grey source of each coloured set
SOURCES = {"coloured-mnist-5k": "mnist-5k", "coloured-mnist": "mnist"}
#: one keyed stream per source split (``mnist-5k``'s splits share the file's indices, so they share one), so that
#: image 7 of MNIST's train and test splits get different colours
STREAMS = {"mnist-5k": 1, "mnist:train": 2, "mnist:test": 3}


def stream_of(source: str, split: str) -> int:
    """The keyed stream of the images of ``source``'s base ``split``."""
    return STREAMS["mnist-5k"] if source == "mnist-5k" else STREAMS[f"{source}:{split}"]


def colours(keys: Tensor, *, stream: int) -> tuple[Tensor, Tensor]:
    """Background and foreground colours ``(N, 3)`` each, for the images whose source indices are ``keys``."""
    draws = keyed_uniform(keys.to(torch.int64).cpu(), (CANDIDATES, 2, 3), seed=_SEED, stream=stream)
    luma = torch.tensor(LUMA)
    gap = ((draws[:, :, 1] - draws[:, :, 0]) * luma).sum(-1).abs()  # (N, CANDIDATES)
    ok = gap >= MIN_LUMINANCE_GAP
    # the first candidate that passes; when none does (probability about 0.64 ** 16 < 1e-3), the widest gap
    first = torch.where(ok.any(1), ok.float().argmax(1), gap.argmax(1))
    pick = draws[torch.arange(keys.shape[0]), first]  # (N, 2, 3)
    return pick[:, 0], pick[:, 1]


def colourize(grey: ImageDataset, *, name: str, stream: int) -> ImageDataset:
    """``grey`` (N, 1, H, W) with each image's ink blended from its background to its foreground colour."""
    assert grey.indices is not None
    bg, fg = colours(grey.indices, stream=stream)
    a = grey.images  # (N, 1, H, W)
    images = (1 - a) * bg[:, :, None, None] + a * fg[:, :, None, None]
    return replace(grey, name=name, images=images.clamp_(0.0, 1.0).contiguous())
