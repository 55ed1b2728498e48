"""A classifier that takes pixels in [0, 1] and normalizes inside, plus its metadata."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from bastion import __version__
from bastion.errors import WeightsError


@dataclass(frozen=True, kw_only=True)
class ModelMeta:
    """Everything needed to rebuild a model and to know where it came from."""

    arch: str
    dataset: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch_options: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    bastion_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {f.name for f in fields(cls)}
        missing = {"arch", "dataset", "input_shape", "classes", "mean", "std"} - set(d)
        if missing:
            raise WeightsError(f"model metadata lacks {sorted(missing)}")
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("input_shape", "classes", "mean", "std"):
            kw[k] = tuple(kw[k])
        shape, mean, std = kw["input_shape"], kw["mean"], kw["std"]
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise WeightsError(f"model metadata has an invalid input_shape {list(shape)}")
        channels = shape[0] if len(shape) == 3 else None  # images: one mean and std per channel (or one shared)
        for name, vals in (("mean", mean), ("std", std)):
            if not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in vals):
                raise WeightsError(f"model metadata has an invalid {name} {list(vals)} (finite numbers needed)")
            if channels is not None and len(vals) not in (1, channels):
                raise WeightsError(f"model metadata has {len(vals)} {name} values for {channels}-channel inputs")
        if any(v <= 0 for v in std):
            raise WeightsError(f"model metadata has std {list(std)}: every value must be > 0")
        return cls(**kw)


class Classifier(nn.Module):
    """``net`` applied to ``(x - mean) / std``; ``x`` holds pixels in [0, 1], so attacks work in pixel space.

    Attributes:
        net: the underlying network (takes normalized inputs, returns logits).
        meta: a :class:`ModelMeta` describing architecture, data and provenance.
    """

    mean: Tensor  # buffers (not saved: they come from ``meta``)
    std: Tensor
    #: bastion's architectures are deterministic in eval mode (no need to probe them for randomness)
    randomized = False

    def __init__(self, net: nn.Module, meta: ModelMeta) -> None:
        super().__init__()
        self.net = net
        self.meta = meta
        shape = (1, -1) + (1,) * (len(meta.input_shape) - 1)
        self.register_buffer("mean", torch.tensor(meta.mean, dtype=torch.float32).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(meta.std, dtype=torch.float32).reshape(shape), persistent=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.meta.classes

    @property
    def num_classes(self) -> int:
        return len(self.meta.classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def describe(self) -> dict[str, Any]:
        """Architecture, data and provenance from :attr:`meta` (see :func:`bastion._model.describe_model`)."""
        meta = self.meta
        d: dict[str, Any] = {"arch": meta.arch, "dataset": meta.dataset, "input_shape": list(meta.input_shape)}
        if meta.arch_options:
            d["arch_options"] = meta.arch_options
        if meta.training.get("split") is not None:
            d["trained_on"] = f"{meta.training.get('data', '?')}:{meta.training['split']}"
        if meta.training.get("command"):
            d["training"] = meta.training["command"]
        if meta.metrics:
            d["metrics"] = meta.metrics
        return d

    def extra_repr(self) -> str:
        return f"arch={self.meta.arch!r}, dataset={self.meta.dataset!r}"


