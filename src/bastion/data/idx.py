"""MNIST and Fashion-MNIST from the standard IDX files (the same ``.gz`` files a user downloads).

Files are looked up in ``data_dir/<subdir>/`` or ``data_dir/`` itself (``data_dir`` defaults to
``$BASTION_DATA``, then ``~/.cache/bastion``). Gzipped or uncompressed files are both accepted. Checksums:
MNIST is verified by the md5 of the *uncompressed* payload (the checksum every MNIST loader publishes, which
survives re-compression); Fashion-MNIST by the md5 of the official ``.gz`` files (Zalando publishes only
those). Every IDX header is validated (magic number, dimensions, exact payload length), so a truncated file
is reported as such.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bastion._checks import shown
from bastion.data._files import digest, resolve_dir, verify
from bastion.data.base import ImageDataset
from bastion.errors import BastionError, DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


@dataclass(frozen=True)
class IdxSpec:
    name: str
    subdir: str
    classes: tuple[str, ...]
    urls: tuple[str, ...]
    #: md5 of the uncompressed payload, by file name without ``.gz``
    md5_raw: dict[str, str]
    #: md5 of the official ``.gz`` files
    md5_gz: dict[str, str]

    def files(self, split: str) -> tuple[str, str]:
        prefix = {"train": "train", "test": "t10k"}.get(split)
        if prefix is None:
            raise BastionError(f"{self.name} has splits 'train' and 'test', not {shown(split)}")
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


MNIST = IdxSpec(
    name="mnist",
    subdir="mnist",
    classes=tuple(str(i) for i in range(10)),
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist", "https://storage.googleapis.com/cvdf-datasets/mnist"),
    md5_raw={
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    md5_gz={
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

FASHION_MNIST = IdxSpec(
    name="fashion-mnist",
    subdir="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
    md5_raw={},
    md5_gz={
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)


def parse_idx(payload: bytes, *, magic: int, what: str) -> np.ndarray:
    """Parse an uncompressed IDX payload (uint8 data) into an array, validating the header and length."""
    if len(payload) < 8:
        raise DataError(f"{what}: {len(payload)} bytes is too short for an IDX header (truncated?)")
    got_magic, n = struct.unpack(">II", payload[:8])
    if got_magic != magic:
        raise DataError(f"{what}: IDX magic number {got_magic}, expected {magic} (wrong or corrupt file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{what}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, payload[4:header])
    expected = header + int(np.prod(dims))
    if len(payload) != expected:
        raise DataError(
            f"{what}: payload is {len(payload)} bytes, the header {list(dims)} implies {expected} "
            f"({'truncated' if len(payload) < expected else 'trailing bytes'})"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims)


def _read(path: Path, spec: IdxSpec, stem: str, *, verify_checksum: bool) -> tuple[bytes, str]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a valid gzip file ({e}); truncated or corrupt download?") from e
    else:
        payload = raw
    if verify_checksum:
        if stem in spec.md5_raw:
            verify(payload, spec.md5_raw[stem], "md5", what=f"{path} (uncompressed payload)")
        elif path.suffix == ".gz":
            verify(raw, spec.md5_gz[stem], "md5", what=str(path))
        else:
            raise DataError(
                f"{path}: {spec.name} publishes checksums only for the .gz files; keep the official .gz file "
                "(or pass verify=False)"
            )
    return payload, digest(raw, "sha256")


def load(spec: IdxSpec, split: str, *, root: Path, download: bool, verify_checksum: bool = True) -> ImageDataset:
    stems = spec.files(split)
    gz = [s + ".gz" for s in stems]
    fallback = spec is MNIST  # files directly in the data root are taken for MNIST's, never Fashion-MNIST's
    attempts = ((gz, False), (list(stems), False), (gz, download))  # .gz, else uncompressed, else fetch the .gz
    for i, (names, fetch) in enumerate(attempts):
        try:
            folder = resolve_dir(root, spec.subdir, names, urls=spec.urls, download=fetch, root_fallback=fallback)
            break
        except DataError:
            if i == len(attempts) - 1:  # the error names the missing .gz files
                raise
    img_payload, img_sha = _read(folder / names[0], spec, stems[0], verify_checksum=verify_checksum)
    lab_payload, lab_sha = _read(folder / names[1], spec, stems[1], verify_checksum=verify_checksum)
    images = parse_idx(img_payload, magic=IMAGES_MAGIC, what=str(folder / names[0]))
    labels = parse_idx(lab_payload, magic=LABELS_MAGIC, what=str(folder / names[1]))
    if images.ndim != 3 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= len(spec.classes):
        raise DataError(f"{folder / names[1]}: label {int(labels.max())} outside the {len(spec.classes)} classes")
    return ImageDataset(
        name=spec.name,
        split=split,
        images=torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=spec.classes,
        sha256={names[0]: img_sha, names[1]: lab_sha},
    )
