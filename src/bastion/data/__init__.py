"""Data sets as :class:`ImageDataset` values: images float32 in [0, 1], labels int64, provenance recorded.

>>> from bastion.data import load_dataset
>>> ds = load_dataset("mnist-5k", "test")
>>> ds.images.shape, ds.labels.dtype
(torch.Size([1000, 1, 28, 28]), torch.int64)
"""

from __future__ import annotations

import os
from dataclasses import replace

from bastion._checks import shown
from bastion.data import blobs, cifar, coloured, idx, mnist5k
from bastion.data._files import data_root
from bastion.data.base import ImageDataset, parse_split
from bastion.data.images import ImageFiles, ImageTransform, image_folder, image_list, single_image
from bastion.errors import BastionError, ConfigError, DataError, UnknownNameError

__all__ = ["ImageDataset", "ImageFiles", "ImageTransform", "LabelledImages", "load_dataset", "open_images",
           "is_image_source", "image_folder", "image_list", "single_image", "DATASETS", "data_root"]

#: what the evaluator and the front ends take: images in memory, or image files decoded batch by batch
LabelledImages = ImageDataset | ImageFiles

#: the prefixes that name your own images (``folder:PATH``, ``images:PATH``) rather than a data set
IMAGE_SOURCES = ("folder", "images")

#: name -> splits
DATASETS: dict[str, tuple[str, ...]] = {
    "mnist-5k": ("all", "train", "test"),
    "mnist": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "blobs2d": ("train", "test"),
    "coloured-mnist-5k": ("all", "train", "test"),
    "coloured-mnist": ("train", "test"),
}


def load_dataset(
    name: str,
    split: str = "test",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    verify: bool = True,
) -> ImageDataset:
    """Load a data set split.

    Args:
        name: one of ``mnist-5k`` (embedded, the default everywhere), ``mnist``, ``fashion-mnist``,
            ``cifar10``, ``blobs2d``, or the colour versions of MNIST (random foreground and background colours,
            3 channels; see :mod:`bastion.data.coloured`): ``coloured-mnist-5k`` (embedded) and ``coloured-mnist``.
        split: a split name, optionally sliced like a Python list: ``"train[5848:]"``.
        data_dir: folder holding the standard files (default ``$BASTION_DATA``, then ``~/.cache/bastion``).
        download: fetch missing official files (needs a network); offline, missing files fail fast.
        verify: check published checksums (turn off only for your own re-encoded files).

    Raises:
        UnknownNameError: unknown data set (the message lists the valid names).
        DataError: missing, truncated, corrupt or wrong-checksum files (the message names the file).
    """
    if name not in DATASETS:
        raise UnknownNameError(f"unknown data set {shown(name)}; valid names: {', '.join(DATASETS)}")
    base, sl = parse_split(split)
    if base not in DATASETS[name]:
        raise BastionError(f"{name} has splits {DATASETS[name]}, not {shown(base)}")
    if name in coloured.SOURCES:
        source = coloured.SOURCES[name]
        grey = load_dataset(source, split, data_dir=data_dir, download=download, verify=verify)  # sliced first
        return coloured.colourize(grey, name=name, stream=coloured.stream_of(source, base))
    root = data_root(data_dir)
    if name == "mnist-5k":
        ds = mnist5k.load(base, verify_checksum=verify)
    elif name in ("mnist", "fashion-mnist"):
        spec = idx.MNIST if name == "mnist" else idx.FASHION_MNIST
        ds = idx.load(spec, base, root=root, download=download, verify_checksum=verify)
    elif name == "cifar10":
        ds = cifar.load(base, root=root, download=download, verify_checksum=verify)
    else:
        ds = blobs.load(base)
    if sl is not None:
        total = len(ds)
        ds = replace(ds.subset(sl), split=split)
        if len(ds) == 0:
            raise DataError(f"{name} split {shown(split)} selects none of the {total} items of {shown(base)}")
    return ds


def is_image_source(spec: str) -> bool:
    """Whether ``spec`` names your own images (``folder:PATH`` or ``images:PATH``) rather than a data set."""
    return spec.partition(":")[0] in IMAGE_SOURCES and ":" in spec


def open_images(
    spec: str,
    *,
    transform: ImageTransform,
    labels: str | os.PathLike[str] | None = None,
    classes: tuple[str, ...] | None = None,
    strict: bool = False,
) -> ImageFiles:
    """Your own images, listed (decoded later, batch by batch; see :mod:`bastion.data.images`).

    Args:
        spec: ``folder:PATH`` (one subfolder per class) or ``images:PATH`` (with ``labels``, a CSV of
            ``file,label`` rows).
        transform: how files become inputs (channels, resize, crop).
        labels: the CSV file for ``images:PATH``.
        classes: the model's class names, when known (folders and labels are matched to them by name).
        strict: refuse unreadable files instead of skipping them.

    Raises:
        ConfigError: a malformed ``spec``, or ``labels`` missing or given where it does not apply.
        DataError: see :func:`~bastion.data.images.image_folder` and :func:`~bastion.data.images.image_list`.
    """
    kind, _, path = spec.partition(":")
    if kind not in IMAGE_SOURCES or not path:
        raise ConfigError(f"cannot read images from {shown(spec)}; use folder:PATH (one subfolder per class) or "
                          "images:PATH with a CSV of file,label rows")
    if kind == "folder":
        if labels is not None:
            raise ConfigError("a labels CSV goes with images:PATH; folder:PATH takes its labels from the class folders")
        return image_folder(path, transform=transform, classes=classes, strict=strict)
    if labels is None:
        raise ConfigError(f"{spec} needs its labels: a CSV file of file,label rows (--labels FILE)")
    return image_list(path, labels, transform=transform, classes=classes, strict=strict)
