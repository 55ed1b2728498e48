"""A corpus of hostile weights files: valid safetensors whose metadata or tensors lie.

Each file is small on disk; what it asks for is not (a 200,000-unit hidden layer, a 10**12-unit one, a
100,000 x 100,000 input, int64 weights, a barrage without a configuration, ...). The loader must refuse every
one with a :class:`bastion.errors.WeightsError` naming the file and the field, without building the model it
describes. ``tests/models/test_malicious_weights.py`` builds the corpus in a temporary folder with
:func:`build_corpus` and checks that; to look at the files themselves::

    python -m tests.models.make_malicious_weights OUT_FOLDER
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bastion.models import create_model

#: a valid model's metadata and tensors to start from (small: an mnist-cnn on 8 x 8 inputs is 27k parameters)
_SHAPE = (1, 8, 8)


def _base(arch: str = "mnist-cnn", **options: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    model = create_model(arch, **options)
    meta = json.loads(json.dumps(model.meta.to_dict()))
    if arch == "mnist-cnn":  # the same net on 8 x 8 inputs: fewer parameters, same rules
        meta["input_shape"] = list(_SHAPE)
        model = _rebuilt(meta)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return meta, tensors


def _rebuilt(meta: dict[str, Any]) -> torch.nn.Module:
    from bastion.models.zoo import ARCHITECTURES

    net = ARCHITECTURES.get(meta["arch"])(input_shape=tuple(meta["input_shape"]), num_classes=len(meta["classes"]),
                                         **meta["arch_options"])
    return torch.nn.ModuleDict({"net": net})


def _save(path: Path, meta: dict[str, Any] | str, tensors: dict[str, torch.Tensor]) -> None:
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata={"bastion": text, "format_version": "1"})


def _raw(path: Path, header: dict[str, Any], data: bytes = b"", *, claimed_size: int | None = None) -> None:
    """A safetensors file written by hand (8-byte little-endian header size, JSON header, data)."""
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if claimed_size is None else claimed_size) + blob + data)


def _meta_case(**change: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        meta, tensors = _base()
        for key, value in change.items():
            if "__" in key:
                outer, inner = key.split("__")
                meta[outer] = {**meta[outer], inner: value}
            else:
                meta[key] = value
        _save(path, meta, tensors)

    return write


def _nested(path: Path) -> None:
    meta, tensors = _base()
    depth = 100_000
    text = json.dumps(meta)[:-1] + ', "notes": ' + "[" * depth + "]" * depth + "}"
    _save(path, text, tensors)


def _huge_integer(path: Path) -> None:
    meta, tensors = _base()
    text = json.dumps({**meta, "arch_options": {"hidden": 0}}).replace('"hidden": 0', '"hidden": 1' + "0" * 5000)
    _save(path, text, tensors)


def _huge_metadata(path: Path) -> None:
    meta, tensors = _base()
    meta["training"] = {"command": "x" * (2 * 1024 * 1024)}
    _save(path, meta, tensors)


def _dtype(dtype: torch.dtype) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        meta, tensors = _base("logreg")
        _save(path, meta, {k: (v * 100).to(dtype) for k, v in tensors.items()})

    return write


def _wrong_shape(path: Path) -> None:
    meta, tensors = _base("logreg")
    tensors["net.fc.weight"] = torch.zeros(10, 785)
    _save(path, meta, tensors)


def _header_claims_terabytes(path: Path) -> None:
    """A header size field of 2**40 bytes on a 200-byte file."""
    meta, _ = _base("logreg")
    _raw(path, {"__metadata__": {"bastion": json.dumps(meta)}}, claimed_size=2**40)


def _tensor_claims_gigabytes(path: Path) -> None:
    """A tensor declared [10, 100_000_000] whose data is not in the file."""
    meta, _ = _base("logreg")
    header = {"__metadata__": {"bastion": json.dumps(meta)},
              "net.fc.weight": {"dtype": "F32", "shape": [10, 100_000_000], "data_offsets": [0, 4_000_000_000]},
              "net.fc.bias": {"dtype": "F32", "shape": [10], "data_offsets": [4_000_000_000, 4_000_000_040]}}
    _raw(path, header, b"\x00" * 64)


def _many_tensors(path: Path) -> None:
    """30,000 empty tensors in the header (none of them the architecture's)."""
    meta, _ = _base("logreg")
    header: dict[str, Any] = {"__metadata__": {"bastion": json.dumps(meta)}}
    header.update({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(30_000)})
    _raw(path, header)


def _resnet_too_big(path: Path) -> None:
    meta, tensors = _base("logreg")
    meta.update(arch="cifar-resnet", dataset="cifar10", input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.25] * 3,
                arch_options={"width": 256, "blocks": 8})
    _save(path, meta, tensors)


#: file name -> (writer, a fragment the refusal must contain: the field or the problem)
CORPUS: dict[str, tuple[Callable[[Path], None], str]] = {
    "hidden-200000.safetensors": (_meta_case(arch_options={"hidden": 200_000}, input_shape=[1, 28, 28]),
                                  "arch_options.hidden"),
    "hidden-1e12.safetensors": (_meta_case(arch_options={"hidden": 10**12}), "arch_options.hidden"),
    "hidden-negative.safetensors": (_meta_case(arch_options={"hidden": -5}), "arch_options.hidden"),
    "hidden-string.safetensors": (_meta_case(arch_options={"hidden": "100"}), "arch_options.hidden"),
    "dropout-one.safetensors": (_meta_case(arch_options={"dropout": 1.0}), "arch_options.dropout"),
    "unknown-option.safetensors": (_meta_case(arch_options={"depth": 3}), "arch_options"),
    "options-list.safetensors": (_meta_case(arch_options=[1, 2]), "arch_options"),
    "input-shape-huge.safetensors": (_meta_case(input_shape=[1, 100_000, 100_000]), "input_shape"),
    "input-shape-float.safetensors": (_meta_case(input_shape=[1, 1e5, 1e5]), "input_shape"),
    "input-shape-rank.safetensors": (_meta_case(input_shape=[64]), "input_shape"),
    "bart-without-config.safetensors": (_meta_case(training={"defense": {"kind": "bart"}}), "training.defense.bart"),
    "bart-bad-k.safetensors": (_meta_case(training={"defense": {"kind": "bart", "bart": {"k": "abc"}}}),
                               "training.defense.bart"),
    "bart-huge-n-samples.safetensors": (
        _meta_case(training={"defense": {"kind": "bart", "bart": {"k": 1, "n_samples": 10**9}}}),
        "training.defense.bart.n_samples"),
    "bart-bad-group.safetensors": (
        _meta_case(training={"defense": {"kind": "bart", "bart": {"k": 1, "groups": [{"name": "jpeg", "quality": 7}]}}}),
        "training.defense.bart"),
    "defense-list.safetensors": (_meta_case(training={"defense": [1]}), "training.defense"),
    "training-list.safetensors": (_meta_case(training=[1, 2]), "training"),
    "metrics-string.safetensors": (_meta_case(metrics="great"), "metrics"),
    "command-number.safetensors": (_meta_case(training={"command": 5}), "training.command"),
    "nested.safetensors": (_nested, "nested"),
    "huge-integer.safetensors": (_huge_integer, "metadata"),
    "huge-metadata.safetensors": (_huge_metadata, "metadata"),
    "std-1e-308.safetensors": (_meta_case(std=[1e-308]), "std"),
    "std-1e-40.safetensors": (_meta_case(std=[1e-40]), "std"),
    "mean-1e39.safetensors": (_meta_case(mean=[1e39]), "mean"),
    "classes-none.safetensors": (_meta_case(classes=[]), "classes"),
    "classes-numbers.safetensors": (_meta_case(classes=list(range(10))), "classes"),
    "classes-many.safetensors": (_meta_case(classes=[str(i) for i in range(20_000)]), "classes"),
    "arch-number.safetensors": (_meta_case(arch=5), "arch"),
    "int64-weights.safetensors": (_dtype(torch.int64), "int64"),
    "float16-weights.safetensors": (_dtype(torch.float16), "float16"),
    "bool-weights.safetensors": (_dtype(torch.bool), "bool"),
    "wrong-shape.safetensors": (_wrong_shape, "net.fc.weight"),
    "header-claims-terabytes.safetensors": (_header_claims_terabytes, "header"),
    "tensor-claims-gigabytes.safetensors": (_tensor_claims_gigabytes, "truncated"),
    "many-tensors.safetensors": (_many_tensors, "tensors"),
    "resnet-too-big.safetensors": (_resnet_too_big, "parameters"),
}


def build_corpus(folder: Path) -> dict[Path, str]:
    """Write every file of :data:`CORPUS` into ``folder``; returns path -> the fragment its refusal must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (write, fragment) in CORPUS.items():
        write(folder / name)
        out[folder / name] = fragment
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.models.make_malicious_weights OUT_FOLDER")
    for path in build_corpus(Path(sys.argv[1])):
        sys.stdout.write(f"{path}\n")
