"""Write tests/data/mnist_train_image_hashes.npz: a 64-bit hash of every official MNIST training image.

    python tests/data/make_mnist_hashes.py [--data-dir ../shared/data]

The held-out test (test_mnist5k.py) then checks on a clean clone, without full MNIST, that every mnist-5k image is
among MNIST's training images 0-5847 and none among 5848-59999, the images every shipped model trained on.
Hash: BLAKE2b with an 8-byte digest of the image's 784 uint8 pixels (a chance collision between any mnist-5k image
and any of the 54,152 others has probability about 1.5e-11).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "mnist_train_image_hashes.npz"


def image_hashes(pixels: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N,) uint64."""
    flat = np.ascontiguousarray(pixels.reshape(len(pixels), -1))
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
                     for row in flat], dtype=np.uint64)


def main() -> None:
    from bastion.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = ap.parse_args()
    train = load_dataset("mnist", "train", data_dir=args.data_dir)
    pixels = (train.images * 255).round().to(dtype=torch.uint8).squeeze(1).numpy()
    np.savez_compressed(OUT, hashes=image_hashes(pixels), source=np.array(sorted(train.sha256.items()), dtype=str))
    print(f"wrote {OUT} ({len(pixels)} images)")  # noqa: T201 - a script


if __name__ == "__main__":
    main()
