"""CIFAR-10 from the standard "python version" files: ``cifar-10-python.tar.gz`` or its extracted folder
``cifar-10-batches-py/``.

Those batches are Python pickles. bastion never runs an unrestricted unpickler on a file: each batch is
first checked against its published md5, and then read by a restricted unpickler that only allows the
handful of NumPy reconstructors an array needs (anything else raises), so even a file that slipped past the
checksum (``verify=False``) cannot execute code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion._checks import shown
from bastion.data._files import digest, resolve_dir, verify
from bastion.data.base import ImageDataset
from bastion.errors import BastionError, DataError

URLS = ("https://www.cs.toronto.edu/~kriz",)
TARBALL = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")
        return super().find_class(module, name)


def read_batch(data: bytes, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR batch pickle into images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{what}: not a valid CIFAR batch ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a dict, got {type(obj).__name__}")
    x = obj.get(b"data", obj.get("data"))
    y = obj.get(b"labels", obj.get("labels"))
    if not isinstance(x, np.ndarray) or y is None:
        raise DataError(f"{what}: missing 'data' or 'labels'")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DataError(f"{what}: pixels must be integers in 0..255 (CIFAR's uint8), got {x.dtype}"
                            + (f" in [{x.min()}, {x.max()}]" if x.size else ""))
        x = x.astype(np.uint8)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise DataError(f"{what}: data {x.shape} / labels {y.shape} are not (N, 3072) / (N,)")
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise DataError(f"{what}: labels outside [0, 9]")
    return x.reshape(-1, 3, 32, 32), y


def _members_from_tar(path: Path, names: list[str], *, verify_checksum: bool) -> dict[str, bytes]:
    raw = path.read_bytes()
    if verify_checksum:
        verify(raw, TARBALL_MD5, "md5", what=str(path))
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for name in names:
                f = tar.extractfile(f"{FOLDER}/{name}")
                if f is None:
                    raise DataError(f"{path}: {FOLDER}/{name} is not a regular file")
                out[name] = f.read()
    except (tarfile.TarError, OSError, EOFError, KeyError) as e:
        raise DataError(f"{path}: cannot read {names} from the tarball ({e}); truncated or corrupt?") from e
    return out


def load(split: str, *, root: Path, download: bool, verify_checksum: bool = True) -> ImageDataset:
    if split not in SPLITS:
        raise BastionError(f"cifar10 has splits 'train' and 'test', not {shown(split)}")
    names = SPLITS[split]
    sha: dict[str, str] = {}
    folder = next((d for d in (root / FOLDER, root / "cifar10" / FOLDER) if all((d / n).exists() for n in names)), None)
    if folder is not None:
        blobs = {n: (folder / n).read_bytes() for n in names}
    else:
        tdir = resolve_dir(root, "cifar10", [TARBALL], urls=URLS, download=download)
        sha[TARBALL] = digest((tdir / TARBALL).read_bytes(), "sha256")
        blobs = _members_from_tar(tdir / TARBALL, names, verify_checksum=verify_checksum)
    batches = []
    for n in names:
        if verify_checksum:
            verify(blobs[n], BATCH_MD5[n], "md5", what=n)
        sha.setdefault(n, digest(blobs[n], "sha256"))
        batches.append(read_batch(blobs[n], what=n))
    xs, ys = zip(*batches, strict=True)
    return ImageDataset(
        name="cifar10",
        split=split,
        images=torch.from_numpy(np.concatenate(xs)).float().div_(255.0),
        labels=torch.from_numpy(np.concatenate(ys)),
        classes=CLASSES,
        sha256=sha,
    )
