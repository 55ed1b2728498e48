"""A user's own model and images, generated into a test's tmp_path (not a test module).

The model is a factory file whose network averages each colour channel and applies a 3x3 linear layer, so its
predictions can be computed by hand from the image files (numpy on the decoded pixels): a clean accuracy that the
CLI's must equal, and that the normalization (--mean/--std) visibly changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

FACTORY = '''
import torch
from torch import nn


def build():
    """The mean of each colour channel, then a 3x3 linear layer: class = argmax of W @ means + b."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))


def build10():
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))


def broken():
    raise RuntimeError("CUDA driver not found")
'''

CLASSES = ("bluish", "greenish", "reddish")  # sorted, as the folder listing sorts them
#: the channel each class's images have more of (for most of its images)
BOOST = {"reddish": 0, "greenish": 1, "bluish": 2}
MEAN = (0.2, 0.5, 0.8)
STD = (0.3, 0.2, 0.1)
WEIGHT = torch.eye(3)


def write_factory(folder: Path) -> Path:
    f = folder / "channel_model.py"
    f.write_text(FACTORY)
    return f


def write_weights(path: Path, *, classes: int = 3) -> Path:
    """Weights for ``build`` (identity: the largest normalized channel mean wins) or ``build10``."""
    w = torch.zeros(classes, 3)
    w[:3] = WEIGHT
    save_file({"2.weight": w, "2.bias": torch.zeros(classes)}, str(path))
    return path


def image_array(cls: str, i: int) -> np.ndarray:
    """64x64 RGB noise with one channel lifted: the class's own for 3 of 4 images, the next one's for the 4th."""
    rng = np.random.default_rng(100 * BOOST[cls] + i)
    a = rng.uniform(0, 0.5, (64, 64, 3))
    a[..., (BOOST[cls] + (i == 3)) % 3] += 0.4
    return (a * 255).round().astype(np.uint8)


def write_folder(root: Path, per_class: int = 4) -> list[tuple[Path, int]]:
    """One subfolder per class; returns (file, label) in listing order."""
    out = []
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            f = root / cls / f"{i}.png"
            Image.fromarray(image_array(cls, i)).save(f)
            out.append((f, label))
    return out


def hand_predictions(files: list[Path], *, normalize: bool = True) -> list[int]:
    """The model's predictions computed by hand: channel means of the decoded pixels, normalized, W @ m."""
    preds = []
    for f in files:
        m = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64).mean((0, 1)) / 255
        z = (m - np.array(MEAN)) / np.array(STD) if normalize else m
        preds.append(int(np.argmax(WEIGHT.double().numpy() @ z)))
    return preds


def hand_accuracy(entries: list[tuple[Path, int]], *, normalize: bool = True) -> float:
    preds = hand_predictions([f for f, _ in entries], normalize=normalize)
    return sum(p == y for p, (_, y) in zip(preds, entries, strict=True)) / len(entries)
