"""A classifier that takes pixels in [0, 1] and normalizes inside, plus its metadata."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
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
    def from_dict(cls, d: Any) -> ModelMeta:
        """The metadata a weights file records, checked field by field against bounds (a weights file is
        untrusted input: nothing it says is used before it is checked).

        Raises:
            WeightsError: one line naming the field (``arch_options.hidden``, ``std``, ...) and what is wrong.
        """
        if not isinstance(d, dict):
            raise WeightsError(f"the metadata must be a JSON object, got {_kind(d)}")
        missing = {"arch", "dataset", "input_shape", "classes", "mean", "std"} - set(d)
        if missing:
            raise WeightsError(f"model metadata lacks {sorted(missing)}")
        shape = _input_shape(d["input_shape"])
        kw: dict[str, Any] = {
            "arch": _text(d["arch"], "arch"), "dataset": _text(d["dataset"], "dataset"), "input_shape": shape,
            "classes": _classes(d["classes"]),
            "bastion_version": _text(d.get("bastion_version", __version__), "bastion_version"),
        }
        kw["mean"], kw["std"] = _normalization(d["mean"], d["std"], shape)
        for key in ("arch_options", "training", "metrics"):
            value = d.get(key, {})
            if not isinstance(value, dict):
                raise WeightsError(f"{key} must be a JSON object, got {_kind(value)}")
            kw[key] = value
        training = kw["training"]
        for key in ("command", "data", "split"):
            if training.get(key) is not None and not isinstance(training[key], str):
                raise WeightsError(f"training.{key} must be a string, got {_kind(training[key])}")
        defense = training.get("defense")
        if defense is not None and not (isinstance(defense, dict) and isinstance(defense.get("kind"), str)):
            raise WeightsError(f'training.defense must be a JSON object with a "kind" string, got {_kind(defense)}')
        return cls(**kw)


#: bounds on what metadata may ask for (weights files are untrusted input)
MAX_INPUT_DIMS = 3  # (D,), (H, W) or (C, H, W)
MAX_SIDE = 4096  # largest input dimension
MAX_INPUT_VALUES = 2**24  # values in one input
MAX_CLASSES = 10_000
MAX_TEXT = 200  # characters of a class name, the architecture, data set or version


def _kind(value: Any) -> str:
    """A JSON value's kind for a message (never its repr: it can be huge)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"the number {_short(value)}"
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _integer(value: Any, field: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise WeightsError(f"{field} must be an integer in [{lo}, {hi}], got {_kind(value)}")
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise WeightsError(f"{field} must be a non-empty string of at most {MAX_TEXT} characters, got {_kind(value)}")
    return value


def _input_shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_INPUT_DIMS:
        raise WeightsError(f"input_shape must be a list of 1 to {MAX_INPUT_DIMS} sizes, got {_kind(value)}")
    shape = tuple(_integer(s, "input_shape", 1, MAX_SIDE) for s in value)
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise WeightsError(f"input_shape {list(shape)} has {math.prod(shape):,} values per input "
                           f"(at most {MAX_INPUT_VALUES:,})")
    return shape


def _classes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CLASSES:
        raise WeightsError(f"classes must be a list of 1 to {MAX_CLASSES:,} names, got "
                           + (f"a list of {len(value):,}" if isinstance(value, list) else _kind(value)))
    return tuple(_text(c, f"classes[{i}]") for i, c in enumerate(value))


def _normalization(mean: Any, std: Any, shape: tuple[int, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` checked as the model uses them: one value per channel (or one shared), in float32."""
    out = []
    for name, vals in (("mean", mean), ("std", std)):
        if not isinstance(vals, list) or not vals or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
            shown = [_short(v) for v in vals[:4]] if isinstance(vals, list) else _kind(vals)
            raise WeightsError(f"{name} must be a non-empty list of finite numbers, got {shown}")
        if len(vals) not in (1, shape[0]):
            raise WeightsError(f"model metadata has {len(vals)} {name} values for {shape[0]}-channel inputs"
                               if len(shape) == 3 else
                               f"{name} has {len(vals)} values for inputs of shape {list(shape)} (1 or {shape[0]})")
        out.append(tuple(float(v) for v in vals))
    m, s = out
    if any(v <= 0 for v in s):
        raise WeightsError(f"std {list(s)}: every value must be > 0")
    m32, s32 = torch.tensor(m, dtype=torch.float32), torch.tensor(s, dtype=torch.float32)
    if not torch.isfinite(m32).all():
        raise WeightsError(f"mean {list(m)} overflows float32, the model's dtype")
    if not (s32 > 0).all() or not torch.isfinite(1 / s32).all():
        raise WeightsError(f"std {list(s)} does not survive float32, the model's dtype (it rounds to "
                           f"{s32.tolist()}, and dividing by it overflows)")
    if not (torch.isfinite((0 - m32) / s32).all() and torch.isfinite((1 - m32) / s32).all()):
        raise WeightsError(f"mean {list(m)} and std {list(s)} overflow float32 when they normalize pixels in [0, 1]")
    return m, s


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


