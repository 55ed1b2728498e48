"""Models: a zoo of architectures, safetensors I/O, and weights shipped inside the package.

>>> from bastion.models import pretrained
>>> model = pretrained("mnist-cnn")        # eval mode, pixels in [0, 1] in, logits out
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from bastion._checks import shown
from bastion._model import describe_model
from bastion.errors import BastionError, UnknownNameError, WeightsError
from bastion.models.classifier import Classifier, ModelMeta
from bastion.models.io import load_model, read_meta, save_model
from bastion.models.zoo import ARCHITECTURES, create_model

__all__ = [
    "Classifier",
    "describe_model",
    "ModelMeta",
    "ARCHITECTURES",
    "PRETRAINED",
    "create_model",
    "load_model",
    "save_model",
    "read_meta",
    "pretrained",
    "resolve_model",
    "weights_path",
]

_WEIGHTS = Path(__file__).parent / "weights"

#: shipped model name -> one-line description
PRETRAINED: dict[str, str] = {
    "logreg": "softmax regression on MNIST pixels",
    "mnist-cnn": "small conv net (2 conv blocks + 100-unit hidden layer)",
    "mnist-cnn-gap": "conv net with global average pooling (CAM-ready)",
    "mnist-cnn-adv": "mnist-cnn adversarially trained at eps=0.3 (Linf)",
    "mnist-cnn-bart": "mnist-cnn fine-tuned on BaRT barrages (k=2), returned with the barrage in front",
}


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` live inside the package."""
    if name not in PRETRAINED:
        raise UnknownNameError(f"unknown pretrained model {shown(name)}; valid names: {', '.join(PRETRAINED)}")
    return _WEIGHTS / f"{name}.safetensors"


def pretrained(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """A ready model (eval mode) from the weights shipped in the package.

    ``mnist-cnn-bart`` returns a :class:`bastion.defenses.Defended` (the BaRT barrage in front of the
    classifier), which is itself a model.
    """
    path = weights_path(name)
    if not path.exists():
        raise WeightsError(f"pretrained model {shown(name)} is not shipped in this version of bastion ({path} missing)")
    return with_recorded_defense(load_model(path, device=device), source=path)


#: the most BaRT draws a recorded barrage may average over (each prediction runs that many barrages)
MAX_RECORDED_SAMPLES = 1000


def with_recorded_defense(model: Classifier, *, source: str | os.PathLike[str] | None = None) -> nn.Module:
    """``model`` inside the inference-time defense its training recorded (``bastion train --defense bart``
    weights: the barrage in front, as trained), else ``model`` itself.

    Raises:
        WeightsError: the recorded barrage is missing or invalid (the message names ``source``, the weights
            file, and the field).
    """
    defense = model.meta.training.get("defense") or {}
    if not isinstance(defense, dict) or defense.get("kind") != "bart":
        return model
    from bastion.defenses.bart import GROUPS, BaRT  # late import: defenses depend on models
    from bastion.defenses.base import Defended

    where = f"{source}: " if source is not None else ""
    config = defense.get("bart")
    field = "training.defense.bart"
    if not isinstance(config, dict):
        raise WeightsError(f"{where}{field} must be the barrage's configuration (a JSON object with 'k'), got "
                           + ("nothing" if config is None else type(config).__name__))
    k, n_samples, groups = config.get("k"), config.get("n_samples", 1), config.get("groups")
    for key, value, high in (("k", k, len(GROUPS)), ("n_samples", n_samples, MAX_RECORDED_SAMPLES)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
            raise WeightsError(f"{where}{field}.{key} must be an integer in [1, {high}], got {shown(value)}")
    if groups is not None and (not isinstance(groups, list) or not 1 <= len(groups) <= len(GROUPS)):
        raise WeightsError(f"{where}{field}.groups must be a list of 1 to {len(GROUPS)} groups")
    try:
        barrage = BaRT.from_dict(config)
    except (BastionError, TypeError, ValueError) as e:
        raise WeightsError(f"{where}{field}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return Defended(barrage, model).eval()


def resolve_model(spec: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> nn.Module:
    """A shipped model by name, or a model file by path; either way inside the inference-time defense its
    training recorded (a BaRT-trained model comes with its barrage, as :func:`pretrained` gives it)."""
    if isinstance(spec, str) and spec in PRETRAINED:
        return pretrained(spec, device=device)
    path = Path(spec)
    if path.exists():
        return with_recorded_defense(load_model(path, device=device), source=path)
    raise UnknownNameError(
        f"{shown(str(spec))} is neither a shipped model ({', '.join(PRETRAINED)}) nor an existing weights file"
    )
