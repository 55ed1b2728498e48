"""The ImageDataset value every loader returns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bastion._checks import as_index, shown
from bastion.errors import BastionError, ConfigError, DataError


def _first_line(e: BaseException) -> str:
    """An exception's message as one line (a refusal is one line; torch's errors carry C++ frames after it)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _LabelledItems:
    """What :class:`ImageDataset` and :class:`~bastion.data.images.ImageFiles` share: a labelled set whose items
    can be selected; :meth:`_items` picks a subclass's own per-item fields."""

    name: str
    split: str
    labels: Tensor
    classes: tuple[str, ...]
    indices: Tensor | None
    input_shape: tuple[int, ...]

    def _items(self, idx: Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: Tensor | slice | np.ndarray | list[int], *, split: str | None = None) -> Self:
        """A new data set holding the selected items: integer indices into this one, a boolean mask of its
        length, or a slice."""
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = as_index(np.asarray(index), len(self), error=DataError, what=f"{self.name}: subset")
        assert self.indices is not None
        return replace(self, **self._items(idx), labels=self.labels[idx],  # type: ignore[type-var]
                       indices=self.indices[idx], split=split or f"{self.split}<subset of {len(idx)}>")

    def take(self, n: int | None) -> Self:
        """The first ``n`` items (all when ``n`` is None or larger than the set)."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ConfigError(f"take needs a non-negative number of items, got {shown(n)}")
        if n is None or n >= len(self):
            return self
        return self.subset(slice(0, n), split=f"{self.split}[:{n}]")

    def spread(self, n: int | None) -> Self:
        """``n`` items evenly spaced over the set, ordered so that every prefix is spread too (bit-reversed
        order); all of it, in order, when ``n`` is None or at least the set's size.

        Where :meth:`take` would see one class of a set stored sorted by label (``mnist-5k`` is: its first 500
        images are zeros; a folder listing is sorted by class too), this sees them all, in about equal numbers,
        from any prefix on.
        """
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ConfigError(f"spread needs a positive number of items, got {n}")
        return self.subset(prefix_spread(len(self), n), split=f"{self.split}<{n} spread>")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.input_shape}, classes={len(self.classes)})")


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset(_LabelledItems, Dataset[tuple[Tensor, Tensor]]):
    """Images and labels held in memory.

    Attributes:
        name: registry name of the data set (e.g. ``"mnist"``).
        split: the split it came from, including any slice (``"train[5848:]"``).
        images: float32 tensor (N, C, H, W) in [0, 1] (``blobs2d``: (N, 2) points in [0, 1]).
        labels: int64 tensor (N,).
        classes: class names, ``classes[label]``.
        sha256: hex sha256 of each source file read, by file name.
        indices: int64 (N,), the index of each item in the full source split (for provenance and
            for per-image randomness keys).
    """

    name: str
    split: str
    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    sha256: dict[str, str] = field(default_factory=dict)
    indices: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.indices is None:
            object.__setattr__(self, "indices", torch.arange(self.images.shape[0]))

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]  # a field of ImageFiles
        return tuple(self.images.shape[1:])

    def _items(self, idx: Tensor) -> dict[str, Any]:
        return {"images": self.images[idx]}

    def batch(self, index: slice | Tensor | Sequence[int]) -> Tensor:
        """The images at ``index`` (a slice or integer positions): what :meth:`ImageFiles.batch
        <bastion.data.images.ImageFiles.batch>` decodes from files, here already in memory."""
        return self.images[index] if isinstance(index, slice) else self.images[torch.as_tensor(index).reshape(-1)]

    def load(self) -> ImageDataset:
        """This data set (its images are in memory already; see :meth:`ImageFiles.load
        <bastion.data.images.ImageFiles.load>`)."""
        return self


def prefix_spread(size: int, n: int) -> Tensor:
    """``n`` positions evenly spaced over ``range(size)`` (``n <= size``), ordered so that every prefix is spread
    too (bit-reversed order)."""
    # float64: in float32, positions one step apart could round to the same item once n nears the size
    pos = torch.linspace(0, size - 1, n, dtype=torch.float64).round().long()
    return pos[_prefix_spread_order(n)]


def _prefix_spread_order(n: int) -> Tensor:
    """A permutation of ``range(n)`` whose every prefix is spread over the range (bit-reversal order)."""
    bits = max(1, (n - 1).bit_length())
    rev = torch.zeros(1 << bits, dtype=torch.int64)
    i = torch.arange(1 << bits)
    for b in range(bits):
        rev |= ((i >> b) & 1) << (bits - 1 - b)
    return rev[rev < n]


_SPLIT = re.compile(r"^(?P<base>[A-Za-z0-9_-]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def parse_split(split: str) -> tuple[str, slice | None]:
    """Parse ``"train"`` or ``"train[5848:]"`` into the base split and an optional slice."""
    m = _SPLIT.match(split.strip())
    if not m:
        raise BastionError(f"cannot parse split {shown(split)}; use e.g. 'train', 'test' or 'train[5848:60000]'")
    if m.group(2) is None:
        return m.group("base"), None
    start = int(m.group("start")) if m.group("start") else None
    stop = int(m.group("stop")) if m.group("stop") else None
    return m.group("base"), slice(start, stop)
