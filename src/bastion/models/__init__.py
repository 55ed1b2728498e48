"""Models: a zoo of architectures, safetensors I/O, and weights shipped inside the package.

>>> from bastion.models import pretrained
>>> model = pretrained("mnist-cnn")        # eval mode, pixels in [0, 1] in, logits out
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bastion._checks import shown
from bastion._model import describe_model
from bastion.defenses.bart import GROUPS, BaRT
from bastion.defenses.base import Defended
from bastion.errors import BastionError, ConfigError, UnknownNameError, WeightsError
from bastion.models.classifier import Classifier, ModelMeta
from bastion.models.io import META_KEY, _first_line, _open_header, load_model, read_meta, save_model
from bastion.models.presets import PRESETS, Preprocessing, preset, read_classes
from bastion.models.user import UserModel, file_kind, is_user_spec, load_user_model, wrap_model
from bastion.models.zoo import ARCHITECTURES, create_model
from bastion.registry import Registry

__all__ = [
    "Classifier",
    "describe_model",
    "ModelMeta",
    "ARCHITECTURES",
    "PRETRAINED",
    "ShippedModel",
    "create_model",
    "load_model",
    "save_model",
    "read_meta",
    "pretrained",
    "resolve_model",
    "weights_path",
    "PRESETS",
    "Preprocessing",
    "UserModel",
    "load_user_model",
    "preset",
    "read_classes",
    "wrap_model",
]

_WEIGHTS = Path(__file__).parent / "weights"

@dataclass(frozen=True)
class ShippedModel:
    """A model whose weights ship inside the package (its training command is in the file's metadata).

    Attributes:
        description: one line for listings.
        file: the weights file's name in the package's ``weights`` folder.
    """

    description: str
    file: str

    @property
    def path(self) -> Path:
        return _WEIGHTS / self.file


#: shipped model name -> entry
PRETRAINED: Registry[ShippedModel] = Registry("pretrained model", {
    "logreg": ShippedModel("softmax regression on MNIST pixels", "logreg.safetensors"),
    "mnist-cnn": ShippedModel("small conv net (2 conv blocks + 100-unit hidden layer)", "mnist-cnn.safetensors"),
    "mnist-cnn-gap": ShippedModel("conv net with global average pooling (CAM-ready)", "mnist-cnn-gap.safetensors"),
    "mnist-cnn-adv": ShippedModel("mnist-cnn adversarially trained at eps=0.3 (Linf)", "mnist-cnn-adv.safetensors"),
    "mnist-cnn-bart": ShippedModel("mnist-cnn fine-tuned on BaRT barrages (k=2), returned with the barrage in front",
                                   "mnist-cnn-bart.safetensors"),
    "mnist-cnn-fgsm": ShippedModel("mnist-cnn adversarially trained on plain FGSM examples at eps=0.3 (Goodfellow et al.)",
                                   "mnist-cnn-fgsm.safetensors"),
    "mnist-cnn-sgd": ShippedModel("mnist-cnn trained with SGD and momentum (the weight-decay baseline's reference)",
                                  "mnist-cnn-sgd.safetensors"),
    "mnist-cnn-sgd-wd": ShippedModel("mnist-cnn-sgd's recipe with weight decay 5e-4", "mnist-cnn-sgd-wd.safetensors"),
    "mnist-cnn-dropout": ShippedModel("mnist-cnn's recipe with dropout 0.5", "mnist-cnn-dropout.safetensors"),
})


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` live inside the package."""
    return PRETRAINED.get(name).path


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
        raise WeightsError(f"{where}{field}: {_first_line(e)}") from None
    return Defended(barrage, model).eval()


def resolve_model(
    spec: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
) -> nn.Module:
    """A model by any of its names: a shipped model, a bastion ``.safetensors`` file (either way inside the
    inference-time defense its training recorded: a BaRT-trained model comes with its barrage, as :func:`pretrained`
    gives it), or your own (:func:`~bastion.models.user.load_user_model`: ``my_model.py:build`` with ``weights``,
    ``package.module:build``, a TorchScript file, ``torchvision:NAME``, ``timm:NAME``) behind the normalization of
    ``preprocessing``.

    Raises:
        ConfigError: ``weights`` or ``preprocessing`` for a bastion model (it carries its own); see
            :func:`~bastion.models.user.load_user_model` for your own models.
        UnknownNameError: none of these.
    """
    text = os.fspath(spec)
    if text in PRETRAINED:
        _refuse_own_options(text, weights, preprocessing)
        return pretrained(text, device=device)
    if is_user_spec(text):
        return load_user_model(text, weights=weights, preprocessing=preprocessing, device=device)
    path = Path(text).expanduser()
    if path.is_file():
        if file_kind(path) == "safetensors" and META_KEY in _open_header(path):
            _refuse_own_options(text, weights, preprocessing)
            return with_recorded_defense(load_model(path, device=device), source=path)
        return load_user_model(path, weights=weights, preprocessing=preprocessing, device=device)
    raise UnknownNameError(
        f"{shown(text)} is neither a shipped model ({', '.join(PRETRAINED.names())}) nor an existing model file; "
        "your own model is named my_model.py:build (a function returning an nn.Module, with --weights FILE), "
        "package.module:build, a TorchScript file, torchvision:NAME or timm:NAME"
    )


def _refuse_own_options(name: str, weights: object, preprocessing: Preprocessing | None) -> None:
    given = [o for o, v in (("weights", weights), ("preprocessing", preprocessing)) if v is not None]
    if given:
        raise ConfigError(f"{name} is a bastion model: it carries its own weights, normalization, input size and class "
                          f"names, so {' and '.join(given)} (--weights, --mean/--std, --preset, --classes, --input-size, "
                          "--resize, --center-crop) do not apply")
