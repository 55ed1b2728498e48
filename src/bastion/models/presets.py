"""What a model expects of its inputs, and named presets of it (``imagenet``).

A :class:`Preprocessing` says how pixels in [0, 1] are normalized inside the model (``mean``, ``std``: attacks then
work in pixel space, as the field expects), how image files become inputs (channels, ``resize``, centre crop to
``size``), and the class names. A :class:`Preset` is a named one, in :data:`PRESETS`.

ImageNet's 1,000 class names ship in ``classes/imagenet.txt`` (one a line, in the standard class order: 388 is
"giant panda", 368 "gibbon"): the public-domain "simple labels" of Anish Athalye's imagenet-simple-labels
(short, readable and all distinct, where the WordNet names repeat "crane" and "maillot").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bastion._checks import shown
from bastion.data.images import ImageTransform
from bastion.errors import ConfigError, DataError
from bastion.registry import Registry

_CLASSES = Path(__file__).parent / "classes"

#: bounds on a class-names file (it is user input)
MAX_CLASS_NAMES = 100_000
MAX_NAME_CHARS = 200


def _floats(values: Any, name: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numbers, one per channel (or one for all), got {shown(values)}") from None
    if len(out) not in (1, 3) or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be 1 or 3 finite numbers (one per channel), got {list(out)}")
    return out


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """What a model expects of its inputs (every field optional; :meth:`over` layers them).

    Attributes:
        mean, std: the normalization inside the model, ``(x - mean) / std`` on pixels in [0, 1]; one value per
            channel or one for all. None: the model takes pixels in [0, 1] as they are.
        channels: 3 (RGB) or 1 (grayscale); None: 3.
        size: the ``(height, width)`` the model takes; image files are centre-cropped to it.
        resize: the shorter side image files are resized to before the crop (an int), or an exact
            ``(height, width)``; None with ``size``: the shorter side is resized to fit ``size``.
        classes: the class names, in the model's output order.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None
    size: tuple[int, int] | None = None
    resize: int | tuple[int, int] | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give mean and std together (--mean and --std), or a preset (--preset imagenet)")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ConfigError(f"std must be > 0, got {list(self.std)}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {shown(self.channels)}")
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if vals is not None and self.channels is not None and len(vals) not in (1, self.channels):
                raise ConfigError(f"{len(vals)} {name} values for {self.channels}-channel inputs")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    def over(self, base: Preprocessing) -> Preprocessing:
        """This preprocessing, with ``base``'s fields where this one leaves them unset (None)."""
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})

    @property
    def in_channels(self) -> int:
        """The channels of the model's input (see :attr:`channels`)."""
        return self.channels if self.channels is not None else 3

    def transform(self) -> ImageTransform:
        """How image files become this model's inputs."""
        resize = self.resize
        if resize is None and self.size is not None:
            resize = self.size if self.size[0] != self.size[1] else self.size[0]
        return ImageTransform(channels=self.in_channels, resize=resize, crop=self.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports (class names counted, not listed)."""
        return {"mean": None if self.mean is None else list(self.mean), "std": None if self.std is None else list(self.std),
                "channels": self.in_channels, "size": None if self.size is None else list(self.size),
                "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "classes": None if self.classes is None else len(self.classes)}


def read_classes(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names from a text file, one a line (blank lines and surrounding spaces ignored).

    Raises:
        DataError: no such file, not UTF-8 text, no names, too many or too long names, or a name given twice.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such class-names file")
    if p.stat().st_size > MAX_CLASS_NAMES * (MAX_NAME_CHARS + 2):
        raise DataError(f"{p}: too large for a list of class names")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a UTF-8 text file of class names") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise DataError(f"{p}: no class names (one a line)")
    if len(names) > MAX_CLASS_NAMES:
        raise DataError(f"{p}: {len(names):,} class names; at most {MAX_CLASS_NAMES:,}")
    long = next((i for i, n in enumerate(names) if len(n) > MAX_NAME_CHARS), None)
    if long is not None:
        raise DataError(f"{p}: class {long} has a name of {len(names[long])} characters; at most {MAX_NAME_CHARS}")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(f"{p}: class name {n!r} is given twice (classes {seen[n]} and {i})")
        seen[n] = i
    return names


@dataclass(frozen=True)
class Preset:
    """A named :class:`Preprocessing` (its class names read from a file shipped with bastion).

    Attributes:
        description: one line for listings.
        mean, std, size, resize: see :class:`Preprocessing`.
        classes_file: the class-names file's name in the package's ``classes`` folder.
    """

    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]
    resize: int
    classes_file: str

    def build(self) -> Preprocessing:
        return Preprocessing(mean=self.mean, std=self.std, channels=len(self.mean), size=self.size, resize=self.resize,
                             classes=read_classes(_CLASSES / self.classes_file))


#: preset name -> preset
PRESETS: Registry[Preset] = Registry("preset", {
    "imagenet": Preset("ImageNet-1k classifiers (torchvision, timm): mean/std of ImageNet, resize 256, "
                       "centre crop 224, the 1,000 class names", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                       size=(224, 224), resize=256, classes_file="imagenet.txt"),
})


def preset(name: str) -> Preprocessing:
    """The preprocessing of a registered preset (:data:`PRESETS`)."""
    return PRESETS.get(name).build()
