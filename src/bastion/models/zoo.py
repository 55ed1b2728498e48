"""Architectures by name. Each builder returns the bare network (normalized input -> logits)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion._checks import shown
from bastion.errors import BastionError, ConfigError, UnknownNameError, WeightsError
from bastion.models.classifier import Classifier, ModelMeta
from bastion.registry import Registry

#: normalization statistics per data set (computed on the training split)
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "blobs2d": ((0.5, 0.5), (0.25, 0.25)),
    "coloured-mnist": ((0.4991, 0.5006, 0.4998), (0.2892, 0.3106, 0.2842)),
}


def logreg(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """Softmax (multinomial logistic) regression: one linear layer on the flattened pixels."""
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(math.prod(input_shape), num_classes)))


def mnist_cnn(
    input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, dropout: float = 0.0, hidden: int = 100
) -> nn.Module:
    """Two 5x5 conv + max-pool blocks (32, 64 channels), a ``hidden``-unit dense layer (100: about 367k
    parameters; Madry et al.'s MNIST net is this with 1024)."""
    c, h, w = input_shape
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(c, 32, 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, 5, padding=2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
        )
    )
    head: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    if dropout:
        head["drop1"] = nn.Dropout(dropout)
    head["fc1"] = nn.Linear(64 * (h // 4) * (w // 4), hidden)
    head["relu3"] = nn.ReLU()
    if dropout:
        head["drop2"] = nn.Dropout(dropout)
    head["fc2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(OrderedDict(features=features, classifier=nn.Sequential(head)))


def mnist_cnn_gap(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """Five 3x3 conv layers, global average pooling and one linear layer, so CAM applies directly.

    The CAM layer is ``features.relu5`` (the last conv's activation, 7x7 for 28x28 inputs).
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (cin, cout) in enumerate(((input_shape[0], 32), (32, 32), (32, 64), (64, 64), (64, 128)), start=1):
        layers[f"conv{i}"] = nn.Conv2d(cin, cout, 3, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
        if i in (2, 4):
            layers[f"pool{i // 2}"] = nn.MaxPool2d(2)
    return nn.Sequential(OrderedDict(features=nn.Sequential(layers), gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     fc=nn.Linear(128, num_classes)))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def cifar_resnet(
    input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10, width: int = 16, blocks: int = 1
) -> nn.Module:
    """A small pre-activation-free ResNet (3 stages of ``blocks`` basic blocks, widths w, 2w, 4w) with GAP."""
    c = input_shape[0]
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Conv2d(c, width, 3, 1, 1, bias=False), bn=nn.BatchNorm2d(width), relu=nn.ReLU()
    )
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for b in range(blocks):
            stride = 2 if (stage > 0 and b == 0) else 1
            layers[f"block{stage + 1}_{b + 1}"] = _BasicBlock(cin, cout, stride)
            cin = cout
    return nn.Sequential(
        OrderedDict(features=nn.Sequential(layers), gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(cin, num_classes))
    )


def blobs_logreg(input_shape: tuple[int, ...] = (2,), num_classes: int = 2) -> nn.Module:
    """Logistic regression on 2-D points (the toy boundary demo)."""
    return nn.Sequential(OrderedDict(fc=nn.Linear(input_shape[0], num_classes)))


@dataclass(frozen=True)
class ArchOption:
    """An architecture option's type and bounds (``high_open``: ``high`` itself excluded)."""

    kind: type  # int or float
    low: float
    high: float
    high_open: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None: nothing)."""
        kinds = (int,) if self.kind is int else (int, float)
        close = ")" if self.high_open else "]"
        what = f"{'an integer' if self.kind is int else 'a number'} in [{self.low:g}, {self.high:g}{close}"
        if (not isinstance(value, kinds) or isinstance(value, bool) or not math.isfinite(value)
                or not self.low <= value <= self.high or (self.high_open and value == self.high)):
            return f"must be {what}, got {shown(value)}"
        return None


@dataclass(frozen=True)
class _Arch:
    """An architecture: its builder, the data set it is meant for by default, the input ranks it takes ((C, H, W)
    images, or (D,) points) and the options it takes beyond input shape and classes, with their bounds."""

    build: Callable[..., nn.Module]
    dataset: str
    ranks: tuple[int, ...]
    options: dict[str, ArchOption] = field(default_factory=dict)


_ARCHS = {
    "logreg": _Arch(logreg, "mnist", (1, 2, 3)),
    "mnist-cnn": _Arch(mnist_cnn, "mnist", (3,), {"dropout": ArchOption(float, 0.0, 1.0, high_open=True),
                                                  "hidden": ArchOption(int, 1, 65536)}),
    "mnist-cnn-gap": _Arch(mnist_cnn_gap, "mnist", (3,)),
    "cifar-resnet": _Arch(cifar_resnet, "cifar10", (3,), {"width": ArchOption(int, 1, 512),
                                                          "blocks": ArchOption(int, 1, 32)}),
    "blobs-logreg": _Arch(blobs_logreg, "blobs2d", (1,)),
}
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture", {k: a.build for k, a in _ARCHS.items()})
#: the data set each architecture is meant for by default
DEFAULT_DATASET = {k: a.dataset for k, a in _ARCHS.items()}

#: the largest model (parameters and buffers) bastion builds from a weights file: 200 MB of float32
MAX_PARAMETERS = 50_000_000


def check_options(arch: str, options: Any, *, error: type[BastionError] = ConfigError) -> None:
    """Refuse options ``arch`` does not take, of the wrong type or out of bounds (``error`` names the option)."""
    spec = _ARCHS[arch].options if arch in _ARCHS else {}
    if not isinstance(options, dict):
        raise error(f"arch_options must be a JSON object of {arch} options, got {type(options).__name__}")
    unknown = sorted(shown(k, limit=40) for k in options if k not in spec)
    if unknown:
        valid = ", ".join(spec) or "none"
        raise error(f"arch_options: {arch} takes no option {', '.join(unknown)} (valid options: {valid})")
    for key, value in options.items():
        problem = spec[key].problem(value)
        if problem:
            raise error(f"arch_options.{key} {problem}")


def skeleton(meta: ModelMeta) -> Classifier:
    """The model ``meta`` describes, built on the meta device: its tensors' names, shapes and dtypes without
    their memory. A weights file's metadata is checked with this before anything is allocated.

    Raises:
        WeightsError: unknown architecture, options or input shape it does not take, or more than
            :data:`MAX_PARAMETERS` parameters; the message names the field.
    """
    if meta.arch not in ARCHITECTURES:
        raise WeightsError(f"arch: unknown architecture {meta.arch!r}; valid names: {', '.join(ARCHITECTURES.names())}")
    if len(meta.input_shape) not in _ARCHS[meta.arch].ranks:
        ranks = " or ".join(str(r) for r in _ARCHS[meta.arch].ranks)
        raise WeightsError(f"input_shape {list(meta.input_shape)} has {len(meta.input_shape)} dimensions; "
                           f"{meta.arch} takes {ranks}")
    check_options(meta.arch, meta.arch_options, error=WeightsError)
    builder = ARCHITECTURES.get(meta.arch)
    try:
        with torch.device("meta"):
            net = builder(input_shape=meta.input_shape, num_classes=len(meta.classes), **meta.arch_options)
    except (TypeError, ValueError, RuntimeError) as e:
        raise WeightsError(f"cannot build architecture {meta.arch!r} from this metadata ({e})") from None
    n = sum(t.numel() for t in net.state_dict().values())
    if n > MAX_PARAMETERS:
        raise WeightsError(f"arch_options {meta.arch_options} and input_shape {list(meta.input_shape)} describe a "
                           f"{meta.arch} of {n:,} parameters, more than bastion loads ({MAX_PARAMETERS:,})")
    return Classifier(net, meta)

_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "blobs2d": (2,),
           "coloured-mnist": (3, 28, 28)}
#: embedded subsets and the data set whose shape and normalization they share
_SAME_AS = {"mnist-5k": "mnist", "coloured-mnist-5k": "coloured-mnist"}


def create_model(
    arch: str,
    *,
    dataset: str | None = None,
    classes: tuple[str, ...] | None = None,
    seed: int = 0,
    **arch_options: Any,
) -> Classifier:
    """A freshly initialised :class:`Classifier` (deterministic in ``seed``; torch's global RNG untouched).

    Args:
        arch: an architecture name (``ARCHITECTURES.names()``).
        dataset: the data it is for; sets input shape and normalization (default per architecture).
            ``mnist-5k`` is treated as ``mnist``, ``coloured-mnist-5k`` as ``coloured-mnist`` (3x28x28; any
            MNIST architecture takes it).
        classes: class names (default ``"0"`` .. ``"9"``; ``("red", "blue")`` for ``blobs2d``).
        seed: initialisation seed.
        **arch_options: passed to the builder (e.g. ``dropout=0.5`` for ``mnist-cnn``).
    """
    builder: Callable[..., nn.Module] = ARCHITECTURES.get(arch)
    check_options(arch, arch_options)
    ds = dataset or DEFAULT_DATASET[arch]
    ds = _SAME_AS.get(ds, ds)
    if ds not in _SHAPES:
        raise UnknownNameError(f"unknown data set {ds!r} for create_model; valid: {', '.join(sorted(_SHAPES))}")
    input_shape = _SHAPES[ds]
    if classes is None:
        classes = ("red", "blue") if ds == "blobs2d" else tuple(str(i) for i in range(10))
    mean, std = NORMALIZATION.get(ds, NORMALIZATION["mnist"])
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: other devices' RNGs untouched
        net = builder(input_shape=input_shape, num_classes=len(classes), **arch_options)
    meta = ModelMeta(
        arch=arch, dataset=ds, input_shape=input_shape, classes=tuple(classes), mean=mean, std=std,
        arch_options=dict(arch_options),
    )
    return Classifier(net, meta)

