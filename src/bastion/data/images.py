"""Your own images: a folder of class folders, a folder plus a CSV of labels, or single image files.

Images are listed and their headers checked when the data set is made (format, size, colour mode; nothing
decoded), and decoded only when a batch of them is asked for (:meth:`ImageFiles.batch`), so memory stays
bounded by the batch, whatever the number of files.

>>> from bastion.data.images import ImageTransform, image_folder
>>> ds = image_folder("photos", transform=ImageTransform(resize=256, crop=(224, 224)))  # doctest: +SKIP
>>> x = ds.batch(slice(0, 32))                      # (32, 3, 224, 224) float32 in [0, 1]  # doctest: +SKIP

Rules (the same for folders, CSV lists, single images and web uploads that use a transform):

* PNG, JPEG and WebP files (by their content; the suffix only selects which files are looked at). Hidden files
  (a name starting with ".") are ignored; any other file that is not a readable image of those formats is
  skipped and reported by name (:attr:`ImageFiles.skipped`), or refused with ``strict=True``.
* The EXIF orientation is applied (photos show as they were taken).
* Colour: images are converted to the model's channels. A grayscale image for a 3-channel model becomes RGB
  with three equal channels (as torchvision's ``ImageFolder`` loader does), a colour image for a 1-channel model
  becomes its luminance; transparency is dropped. Every converted file is listed (:attr:`ImageFiles.converted`).
* Size: ``resize`` (an int: the shorter side, keeping the aspect ratio; a pair: exactly that height and width,
  bilinear) and then ``crop`` (a centre crop, zero-padded where the image is smaller), as torchvision's
  ``Resize``/``CenterCrop`` on PIL images. Every image must come out at the same size; a listing where they would
  not is refused when it is made, naming the sizes.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from bastion._checks import shown
from bastion.data.base import ImageDataset, _first_line, _LabelledItems
from bastion.errors import ConfigError, DataError

#: file suffixes looked at, and the one format each may hold
SUFFIXES: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
#: the largest image accepted, in pixels (decompression-bomb guard: a header claiming more is refused)
MAX_PIXELS = 1 << 26
#: the most files a listing may hold
MAX_FILES = 10_000_000
#: the largest side resize/crop accept
MAX_SIDE = 8192


def _size(value: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value)):
        raise ConfigError(f"{name} must be a size in pixels (1 to {MAX_SIDE}) or a (height, width) pair, got "
                          f"{shown(value)}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True, kw_only=True)
class ImageTransform:
    """How an image file becomes a model input: channels, resize, centre crop (see the module docstring).

    Attributes:
        channels: 3 (RGB) or 1 (grayscale).
        resize: the shorter side (an int), an exact ``(height, width)``, or None (kept).
        crop: a centre crop ``(height, width)`` (an int: square), or None.
    """

    channels: int = 3
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"images can be converted to 1 (grayscale) or 3 (RGB) channels, not {shown(self.channels)}")
        if isinstance(self.resize, int) and not isinstance(self.resize, bool):
            _size(self.resize, "resize")  # checked; an int stays the shorter side
        else:
            object.__setattr__(self, "resize", _size(self.resize, "resize"))
        object.__setattr__(self, "crop", _size(self.crop, "crop"))

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after :attr:`resize` (torchvision's rule for the shorter side)."""
        r = self.resize
        if r is None:
            return width, height
        if isinstance(r, tuple):
            return r[1], r[0]
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(r * long / short)
        return (r, new_long) if width <= height else (new_long, r)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(height, width)`` of the input made from an image of ``width x height`` pixels."""
        if self.crop is not None:
            return self.crop
        w, h = self.resized(width, height)
        return h, w

    def __call__(self, im: Image.Image) -> Tensor:
        """The image as a ``(channels, H, W)`` float32 tensor in [0, 1]."""
        return torch.from_numpy(self.array(im))

    def array(self, im: Image.Image) -> np.ndarray:
        """The image as a ``(channels, H, W)`` float32 array in [0, 1] (numpy: no thread pool for small work)."""
        im = to_mode(ImageOps.exif_transpose(im) or im, self.channels)
        size = self.resized(*im.size)
        if size != im.size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        if self.crop is not None:
            ch, cw = self.crop
            w, h = im.size
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            im = im.crop((left, top, left + cw, top + ch))  # zero-filled outside the image
        a = np.asarray(im, dtype=np.float32) / np.float32(255)  # as torchvision.ToTensor: a division
        out: np.ndarray = a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "resize": self.resize, "crop": self.crop}


def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """``im`` as 8-bit RGB (``channels=3``) or grayscale (``1``); 16-bit and float images are scaled to 8 bits,
    transparency is dropped."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im.convert("F"), dtype=np.float32)
        hi = 65535.0 if (a.size and float(a.max()) > 255) else 255.0
        im = Image.fromarray((np.clip(a / hi, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    want = "RGB" if channels == 3 else "L"
    return im if im.mode == want else im.convert(want)


def _is_gray(mode: str) -> bool:
    return mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class Header:
    """What an image file's header says: format, size (as displayed, EXIF orientation applied) and mode."""

    format: str
    width: int
    height: int
    mode: str


def read_header(path: Path, *, max_pixels: int = MAX_PIXELS) -> Header:
    """Open ``path`` as the image format its suffix names and read only its header.

    Raises:
        DataError: not a readable image of that format, or more than ``max_pixels`` pixels (the message names
            the file).
    """
    with _open_image(path, "not a readable {fmt} image", max_pixels) as (fmt, im):
        w, h = im.size
        mode = im.mode
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # noqa: BLE001 - a broken EXIF block: the image itself may still be fine
            orientation = 1
    if w < 1 or h < 1:
        raise DataError(f"{path}: the image has no pixels ({w}x{h})")
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: shown as h x w
        w, h = h, w
    return Header(fmt, w, h, mode)


def decode(path: Path, transform: ImageTransform, *, max_pixels: int = MAX_PIXELS) -> Tensor:
    """The image file at ``path`` as a model input ``(C, H, W)`` (see :class:`ImageTransform`).

    Raises:
        DataError: unreadable, truncated, corrupt or too large (the message names the file).
    """
    return torch.from_numpy(decode_array(path, transform, max_pixels=max_pixels))


def decode_array(path: Path, transform: ImageTransform, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`decode` as a float32 numpy array."""
    with _open_image(path, "cannot decode the {fmt} image (truncated or corrupt?)", max_pixels) as (_, im):
        im.load()
        return transform.array(im)


@contextmanager
def _open_image(path: Path, unreadable: str, max_pixels: int) -> Iterator[tuple[str, Image.Image]]:
    """``path`` opened as the format its suffix names (``(format, image)``), refused beyond ``max_pixels`` pixels
    and with Pillow's decompression-bomb guard: any failure to read it, inside the block too, becomes one
    :class:`DataError` naming the file (``unreadable``: what is said of an undecodable file, ``{fmt}`` standing
    for its format)."""
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: not a PNG, JPEG or WebP file (suffix {path.suffix or 'none'})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[fmt]) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise DataError(f"{path}: the image is {w}x{h} = {w * h:,} pixels; at most {max_pixels:,} are "
                                    "accepted")
                yield fmt, im
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: the image has too many pixels (decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as e:
        detail = "" if isinstance(e, UnidentifiedImageError) else f" ({_first_line(e)})"
        raise DataError(f"{path}: {unreadable.format(fmt=fmt)}{detail}") from None


@dataclass(frozen=True, eq=False, repr=False)
class ImageFiles(_LabelledItems, Dataset[tuple[Tensor, Tensor]]):
    """Labelled image files, decoded on demand: what :class:`~bastion.data.base.ImageDataset` is for images
    held in memory, with the same selection methods (:meth:`subset`, :meth:`take`, :meth:`spread`) and
    :meth:`batch` to decode some of them. Made by :func:`image_folder`, :func:`image_list` or :func:`single_image`.

    Attributes:
        name: ``folder:PATH``, ``images:PATH`` or the file's name, for reports.
        split: ``all`` or a description of the selection.
        root: the folder the paths are relative to (for messages and reports).
        paths: one file per item.
        labels: int64 (N,), indices into ``classes``.
        classes: class names.
        transform: how a file becomes an input.
        input_shape: ``(C, H, W)`` of every input.
        indices: int64 (N,), each item's position in the full listing (keys of per-image randomness).
        sha256: ``{"listing": ...}``: a digest of the relative file names, their sizes in bytes and their labels
            (contents are not hashed: a folder can hold gigabytes).
        skipped: ``(file, reason)`` of the files left out of the listing.
        converted: the files whose colours are converted to the model's channels (grayscale to RGB or back).
    """

    name: str
    split: str
    root: Path
    paths: tuple[Path, ...]
    labels: Tensor
    classes: tuple[str, ...]
    transform: ImageTransform
    input_shape: tuple[int, int, int]
    indices: Tensor | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    skipped: tuple[tuple[str, str], ...] = ()
    converted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.paths) != self.labels.shape[0]:
            raise DataError(f"{self.name}: {len(self.paths)} files but {self.labels.shape[0]} labels")
        if self.indices is None:
            object.__setattr__(self, "indices", torch.arange(len(self.paths)))

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return decode(self.paths[i], self.transform), self.labels[i]

    def batch(self, index: slice | Tensor | Sequence[int]) -> Tensor:
        """The images at ``index`` (a slice, or integer positions), decoded: ``(n, C, H, W)`` float32 in [0, 1].

        Raises:
            DataError: a file cannot be decoded, or does not come out at :attr:`input_shape` (names the file).
        """
        pos = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).reshape(-1).tolist()
        out = np.empty((len(pos), *self.input_shape), dtype=np.float32)
        for j, i in enumerate(pos):
            x = decode_array(self.paths[int(i)], self.transform)
            if tuple(x.shape) != self.input_shape:
                raise DataError(f"{self.paths[int(i)]}: decodes to {tuple(x.shape)}, not {self.input_shape} as its "
                                "header said (the file changed since it was listed?)")
            out[j] = x
        return torch.from_numpy(out)

    def load(self) -> ImageDataset:
        """All of it decoded into memory (for small selections: figures, sanity checks, a handful to attack)."""
        return ImageDataset(name=self.name, split=self.split, images=self.batch(slice(None)), labels=self.labels.clone(),
                            classes=self.classes, sha256=dict(self.sha256), indices=self.indices)

    def _items(self, idx: Tensor) -> dict[str, Any]:
        return {"paths": tuple(self.paths[int(i)] for i in idx)}


# ------------------------------------------------------------------------------------------------ listings


def _listing_digest(root: Path, paths: Sequence[Path], labels: Sequence[int]) -> str:
    h = hashlib.sha256()
    for p, y in zip(paths, labels, strict=True):
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        h.update(f"{os.path.relpath(p, root)}\t{y}\t{size}\n".encode())
    return h.hexdigest()


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively, following links once), sorted, hidden names left out."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        if len(out) > MAX_FILES:
            raise DataError(f"{folder}: more than {MAX_FILES:,} files")
    return out


def _build(name: str, root: Path, entries: Sequence[tuple[Path, int]], classes: tuple[str, ...],
           transform: ImageTransform, *, strict: bool, skipped: list[tuple[str, str]]) -> ImageFiles:
    """Headers checked, sizes checked, the data set made."""
    paths: list[Path] = []
    labels: list[int] = []
    converted: list[str] = []
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path, label in entries:
        rel = os.path.relpath(path, root)
        try:
            head = read_header(path)
        except DataError as e:
            if strict:
                raise
            skipped.append((rel, str(e).removeprefix(f"{path}: ")))
            continue
        if _is_gray(head.mode) != (transform.channels == 1):
            converted.append(rel)
        sizes.setdefault(transform.output_size(head.width, head.height), []).append(path)
        paths.append(path)
        labels.append(label)
    if not paths:
        why = f" ({len(skipped)} file(s) skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{name}: no PNG, JPEG or WebP image to use{why}")
    if len(sizes) > 1:
        common = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        shown_sizes = ", ".join(f"{w}x{h} ({len(ps)}, e.g. {os.path.relpath(ps[0], root)})"
                                for (h, w), ps in common[:4])
        raise DataError(f"{name}: the images come out at {len(sizes)} different sizes ({shown_sizes}); give a size "
                        "they all take, e.g. --input-size 224 (resize the shorter side, then centre-crop) or "
                        "--resize/--center-crop")
    (h, w), = sizes
    return ImageFiles(name=name, split="all", root=root, paths=tuple(paths),
                      labels=torch.tensor(labels, dtype=torch.int64), classes=classes, transform=transform,
                      input_shape=(transform.channels, h, w), sha256={"listing": _listing_digest(root, paths, labels)},
                      skipped=tuple(skipped), converted=tuple(converted))


def _normal(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def class_index(names: Sequence[str], classes: Sequence[str], *, what: str) -> list[int]:
    """Each of ``names`` as an index into ``classes``: by name (exactly, else ignoring case and treating "_"
    as a space), or as a number.

    Raises:
        DataError: a name that is neither (the message lists a few, and some of the class names).
    """
    exact = {c: i for i, c in enumerate(classes)}
    loose = {_normal(c): k for k, c in reversed(list(enumerate(classes)))}  # the first class of each loose name
    out: list[int] = []
    unknown: list[str] = []
    for n in names:
        i: int | None = exact.get(n, loose.get(_normal(n)))
        if i is None and n.strip().isdigit() and int(n) < len(classes):
            i = int(n)
        if i is None:
            unknown.append(n)
        else:
            out.append(i)
    if unknown:
        some = ", ".join(repr(u) for u in unknown[:4]) + (" ..." if len(unknown) > 4 else "")
        listed = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise DataError(f"{what}: {len(unknown)} label(s) are not among the model's {len(classes):,} class names "
                        f"({listed}) nor class numbers: {some}")
    return out


def image_folder(path: str | os.PathLike[str], *, transform: ImageTransform, classes: Sequence[str] | None = None,
                 strict: bool = False) -> ImageFiles:
    """A folder with one subfolder per class (torchvision's ``ImageFolder`` layout), its images listed.

    Args:
        path: the folder; each subfolder is a class, its images (at any depth) are that class's.
        transform: how files become inputs (channels, resize, crop).
        classes: the model's class names, when known. Folders named after them (exactly, or ignoring case and
            "_" for spaces: ``giant_panda`` is ``giant panda``) are labelled with their index; a folder layout
            with as many folders as the model has classes, not named after them (ImageNet's ``n01440764``...), is
            labelled in sorted order, as ``ImageFolder`` does. Without ``classes``, the folder names are the classes.
        strict: refuse a file that is not a readable image (default: skip it; :attr:`ImageFiles.skipped`).

    Raises:
        DataError: no such folder, no class folder, no usable image, images of different sizes, or folder names
            that match neither the model's class names nor its number of classes.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    skipped: list[tuple[str, str]] = []
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            if strict:
                raise DataError(f"{f}: a file outside the class folders (each class is a subfolder of {root})")
            skipped.append((f.name, "outside the class folders"))
    if not folders:
        raise DataError(f"{root}: no class folders (put each class's images in a subfolder named after it)")
    names = [d.name for d in folders]
    if classes is None:
        labels, class_names = list(range(len(names))), tuple(names)
    else:
        class_names = tuple(classes)
        try:
            labels = class_index(names, class_names, what=f"{root}: class folders")
        except DataError:
            if len(names) != len(class_names):
                raise DataError(f"{root}: its {len(names)} class folders ({', '.join(names[:4])}"
                                f"{', ...' if len(names) > 4 else ''}) are not named after the model's "
                                f"{len(class_names):,} classes (e.g. {class_names[0]!r}); name them after the "
                                "classes, or give the model's class names with --classes") from None
            labels = list(range(len(names)))  # ImageFolder's rule: sorted folders are classes 0..K-1
    entries: list[tuple[Path, int]] = []
    for folder, label in zip(folders, labels, strict=True):
        for f in _visible_files(folder):
            if f.suffix.lower() in SUFFIXES:
                entries.append((f, label))
            elif strict:
                raise DataError(f"{f}: not a PNG, JPEG or WebP image")
            else:
                skipped.append((os.path.relpath(f, root), "not a PNG, JPEG or WebP image"))
    return _build(f"folder:{root}", root, entries, class_names, transform, strict=strict, skipped=skipped)


def image_list(path: str | os.PathLike[str], labels_csv: str | os.PathLike[str], *, transform: ImageTransform,
               classes: Sequence[str] | None = None, strict: bool = False) -> ImageFiles:
    """The images a CSV file lists, with their labels: rows ``file,label`` (an optional header row starting with
    ``file``, ``filename``, ``image`` or ``path``); files relative to ``path``; labels are class names or class
    numbers of the model (``classes``), or, without ``classes``, names (sorted, they become the classes) or
    numbers.

    Raises:
        DataError: no such folder or CSV, a malformed row (named by its line), unknown labels, no usable image.
    """
    root = Path(path).expanduser()
    csv_path = Path(labels_csv).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: no such labels file")
    rows: list[tuple[int, str, str]] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            for line, row in enumerate(csv.reader(fh), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if line == 1 and row[0].strip().casefold() in ("file", "filename", "image", "path"):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(f"{csv_path}, line {line}: expected two columns, file,label; got {shown(row)}")
                rows.append((line, row[0].strip(), row[1].strip()))
                if len(rows) > MAX_FILES:
                    raise DataError(f"{csv_path}: more than {MAX_FILES:,} rows")
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a UTF-8 text file") from None
    except csv.Error as e:
        raise DataError(f"{csv_path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{csv_path}: no rows (expected file,label lines)")
    raw = [r[2] for r in rows]
    if classes is not None:
        class_names = tuple(classes)
        labels = class_index(raw, class_names, what=str(csv_path))
    elif all(v.isdigit() for v in raw):
        labels = [int(v) for v in raw]
        class_names = tuple(str(i) for i in range(max(labels) + 1))
    else:
        class_names = tuple(sorted(set(raw)))
        labels = [class_names.index(v) for v in raw]
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[Path, int]] = []
    for (line, name, _), label in zip(rows, labels, strict=True):
        f = root / name
        if not f.is_file():
            if strict:
                raise DataError(f"{csv_path}, line {line}: {f} does not exist")
            skipped.append((name, f"listed on line {line} of {csv_path.name}, but no such file"))
            continue
        entries.append((f, label))
    return _build(f"images:{root}", root, entries, class_names, transform, strict=strict, skipped=skipped)


def single_image(path: str | os.PathLike[str], *, transform: ImageTransform, classes: Sequence[str],
                 label: int = 0) -> ImageFiles:
    """One image file as a data set of one (its label, when unknown, is left to the caller to set).

    Raises:
        DataError: no such file, or not a readable PNG/JPEG/WebP image.
    """
    f = Path(path).expanduser()
    if not f.is_file():
        raise DataError(f"{f}: no such image file" if not f.exists() else f"{f}: not a file")
    return _build(f.name, f.parent, [(f, label)], tuple(classes), transform, strict=True, skipped=[])


def describe_skipped(ds: ImageFiles, limit: int = 3) -> str | None:
    """One line about the files left out of ``ds`` (None when none were)."""
    if not ds.skipped:
        return None
    some = "; ".join(f"{f} ({why})" for f, why in ds.skipped[:limit])
    more = f"; and {len(ds.skipped) - limit} more" if len(ds.skipped) > limit else ""
    return f"skipped {len(ds.skipped)} file(s) of {ds.name}: {some}{more}"


def describe_converted(ds: ImageFiles, limit: int = 3) -> str | None:
    """One line about the images whose colours are converted (None when none are)."""
    if not ds.converted:
        return None
    how = "grayscale images are used as RGB (three equal channels)" if ds.transform.channels == 3 else \
        "colour images are used as grayscale (their luminance)"
    some = ", ".join(ds.converted[:limit]) + (", ..." if len(ds.converted) > limit else "")
    return f"{len(ds.converted)} of the images of {ds.name}: {how}, for a {ds.transform.channels}-channel model ({some})"


__all__ = ["ImageFiles", "ImageTransform", "Header", "image_folder", "image_list", "single_image", "decode",
           "read_header", "class_index", "describe_skipped", "describe_converted", "SUFFIXES", "MAX_PIXELS", "to_mode"]
