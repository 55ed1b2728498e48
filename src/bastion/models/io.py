"""Save and load models as safetensors (weights) with JSON metadata in the file header.

Nothing is ever unpickled: a weights file is tensors plus a JSON string, so a malicious file cannot run
code. Every failure names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bastion._outputs import atomic_write
from bastion.data.base import _first_line
from bastion.errors import ConfigError, WeightsError
from bastion.models.classifier import Classifier, ModelMeta
from bastion.models.zoo import skeleton

META_KEY = "bastion"
FORMAT_VERSION = "1"


def save_model(model: Classifier, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (weights + metadata) to ``path`` atomically; returns the path.

    Raises:
        ConfigError: ``model`` is not a :class:`Classifier` (e.g. a defended model: save the classifier it
            wraps, ``defended.model``; a BaRT-trained classifier's metadata brings the barrage back when it is
            loaded by name or path).
    """
    if not isinstance(model, Classifier):
        raise ConfigError(f"save_model takes a bastion Classifier, got {type(model).__name__}; for a defended model "
                          "save the classifier it wraps (defended.model)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {META_KEY: json.dumps(model.meta.to_dict(), sort_keys=True), "format_version": FORMAT_VERSION}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def read_meta(path: str | os.PathLike[str]) -> ModelMeta:
    """The metadata of a weights file, checked (:meth:`ModelMeta.from_dict` and the architecture's options),
    without loading its tensors."""
    return _checked_skeleton(Path(path)).meta


#: bounds on a weights file's header (a weights file is untrusted input)
MAX_HEADER_BYTES = 4 * 1024 * 1024  # the safetensors header: tensor table and metadata
MAX_META_BYTES = 1024 * 1024  # bastion's metadata JSON
MAX_META_DEPTH = 32  # nesting of objects and lists in it

#: safetensors dtype codes -> names, for messages
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
#: what a file may hold for each dtype the architectures use (float64 is rounded to float32 on load)
_ACCEPTED = {torch.float32: ("F32", "F64"), torch.int64: ("I64",)}


def _open_header(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file" if not path.exists() else f"{path}: not a file")
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(head) == 8 and int.from_bytes(head, "little") > MAX_HEADER_BYTES:
        raise WeightsError(f"{path}: its safetensors header claims {int.from_bytes(head, 'little'):,} bytes (at most "
                           f"{MAX_HEADER_BYTES:,}); not a bastion weights file, or corrupt")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a valid safetensors file ({_first_line(e)}); corrupt or truncated?") from None


def _depth(text: str) -> int:
    """How deeply JSON ``text`` nests objects and lists (brackets inside strings do not count)."""
    depth = deepest = 0
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', "", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _checked_skeleton(path: Path) -> Classifier:
    """The model a weights file's metadata describes, on the meta device, once the metadata passed its checks."""
    header = _open_header(path)
    if META_KEY not in header:
        raise WeightsError(f"{path}: safetensors file without bastion metadata (was it saved by bastion.save_model?)")
    text = header[META_KEY]
    if len(text) > MAX_META_BYTES:
        raise WeightsError(f"{path}: its bastion metadata is {len(text):,} characters (at most {MAX_META_BYTES:,})")
    depth = _depth(text)
    if depth > MAX_META_DEPTH:
        raise WeightsError(f"{path}: its bastion metadata is nested {depth} levels deep (at most {MAX_META_DEPTH})")
    try:
        return skeleton(ModelMeta.from_dict(json.loads(text)))  # architecture and size, nothing allocated
    except ValueError as e:  # WeightsError (a ValueError), JSON syntax, integers of 4,300+ digits
        raise WeightsError(f"{path}: {_first_line(e)}" if isinstance(e, WeightsError) else
                           f"{path}: unreadable bastion metadata ({_first_line(e)})") from None


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Classifier:
    """Load a model saved by :func:`save_model`, in eval mode, on ``device``.

    A weights file is untrusted input: its metadata is checked against bounds, and every tensor's name, shape
    and dtype against the architecture it describes (built on the meta device, so without memory), before
    any tensor is read. Weights are float32 (float64 is accepted and rounded to float32).

    Raises:
        WeightsError: missing, corrupt or truncated file, missing or invalid metadata (the message names the
            field), unknown architecture, or tensors that do not match the architecture (each message names
            the file).
    """
    path = Path(path)
    model = _checked_skeleton(path)
    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = list(f.keys())
            _check_tensors(path, model.meta.arch, expected, {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape())
                                                       for k in names})
            state = {}
            for name in names:
                t = f.get_tensor(name).to(expected[name].dtype)
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise WeightsError(f"{path}: tensor {name!r} contains NaN or inf (in float32)")
                state[name] = t
    except (SafetensorError, OSError, RuntimeError) as e:
        raise WeightsError(f"{path}: tensor data is corrupt or truncated ({_first_line(e)})") from None
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def _check_tensors(path: Path, arch: str, expected: dict[str, torch.Tensor],
                   found: dict[str, tuple[str, list[int]]]) -> None:
    """Every tensor the architecture has, each of its shape and of an accepted dtype, and nothing else."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = [f"{len(found):,} tensors in the file, {len(expected)} in the architecture"]
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else ""))
        raise WeightsError(f"{path}: weights do not match architecture {arch!r}: {'; '.join(parts)}")
    for name, (dtype, shape) in found.items():
        want = expected[name]
        if list(shape) != list(want.shape):
            raise WeightsError(f"{path}: weights do not match architecture {arch!r}: tensor {name!r} has shape "
                               f"{list(shape)}, the architecture's {list(want.shape)}")
        if dtype not in _ACCEPTED[want.dtype]:
            what = ("float32 (float64 is accepted and rounded to float32)" if want.dtype == torch.float32
                    else "an int64 counter")
            raise WeightsError(f"{path}: tensor {name!r} is {_DTYPE_NAMES.get(dtype, dtype)}; the architecture's "
                               f"is {what}")
