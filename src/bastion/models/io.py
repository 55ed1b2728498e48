"""Save and load models as safetensors (weights) with JSON metadata in the file header.

Nothing is ever unpickled: a weights file is tensors plus a JSON string, so a malicious file cannot run
code. Every failure names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bastion.errors import ConfigError, WeightsError
from bastion.models.classifier import Classifier, ModelMeta
from bastion.models.zoo import rebuild

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_meta(path: str | os.PathLike[str]) -> ModelMeta:
    """The metadata of a weights file, without loading its tensors."""
    path = Path(path)
    header = _open_header(path)
    return _meta_from_header(path, header)


def _open_header(path: Path) -> dict[str, str]:
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a valid safetensors file ({e}); corrupt or truncated?") from e


def _meta_from_header(path: Path, header: dict[str, str]) -> ModelMeta:
    if META_KEY not in header:
        raise WeightsError(f"{path}: safetensors file without bastion metadata (was it saved by bastion.save_model?)")
    try:
        return ModelMeta.from_dict(json.loads(header[META_KEY]))
    except (json.JSONDecodeError, TypeError) as e:
        raise WeightsError(f"{path}: unreadable bastion metadata ({e})") from e
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from e


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Classifier:
    """Load a model saved by :func:`save_model`, in eval mode, on ``device``.

    Raises:
        WeightsError: missing, corrupt or truncated file, missing metadata, unknown architecture, or
            tensors that do not match the architecture (each message names the file).
    """
    path = Path(path)
    header = _open_header(path)
    meta = _meta_from_header(path, header)
    try:
        model = rebuild(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: cannot build architecture {meta.arch!r} ({e})") from e
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: tensor data is corrupt or truncated ({e})") from e
    for name, t in state.items():
        if not torch.isfinite(t).all():
            raise WeightsError(f"{path}: tensor {name!r} contains NaN or inf")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise WeightsError(f"{path}: weights do not match architecture {meta.arch!r}: {' '.join(first[:4])}") from e
    return model.to(device).eval()
