"""``blobs2d``: two Gaussian clusters in the unit square, class 0 ("red") and class 1 ("blue").

A toy set for drawing decision boundaries and watching FGSM push points across them. Points are (N, 2)
in [0, 1]; the set is a pure function of ``seed`` (default 0). Splits ``train`` and ``test`` use
different streams of the same seed.
"""

from __future__ import annotations

import torch

from bastion._checks import shown
from bastion.data.base import ImageDataset
from bastion.errors import DataError

CLASSES = ("red", "blue")
CENTERS = ((0.35, 0.35), (0.65, 0.65))
SPREAD = 0.08


def load(split: str, *, n: int = 400, seed: int = 0) -> ImageDataset:
    if split not in ("train", "test"):
        raise DataError(f"blobs2d has splits 'train' and 'test', not {shown(split)}")
    g = torch.Generator().manual_seed(seed * 2 + (0 if split == "train" else 1))
    labels = torch.arange(n) % 2
    centers = torch.tensor(CENTERS)[labels]
    points = (centers + SPREAD * torch.randn(n, 2, generator=g)).clamp(0.0, 1.0)
    return ImageDataset(name="blobs2d", split=split, images=points.float(), labels=labels.long(), classes=CLASSES)
