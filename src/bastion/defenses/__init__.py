"""Defenses at inference time: input transformations (BaRT) and output masking.

Each is registered in :data:`DEFENSES` (the CLI's ``--defense`` and the web demo choose from it); the training
defenses (adversarial training, training on barrages) are in :mod:`bastion.training`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from bastion.defenses.bart import BaRT
from bastion.defenses.base import BPDA, Defended, InputDefense, straight_through
from bastion.defenses.masking import HideProbabilities
from bastion.errors import ConfigError
from bastion.registry import Registry

__all__ = ["Defended", "InputDefense", "HideProbabilities", "BPDA", "straight_through", "DEFENSES", "DefenseEntry"]


@dataclass(frozen=True)
class DefenseEntry:
    """A registered inference-time defense: how to put it around a classifier.

    Attributes:
        summary: one line for listings and help texts.
        wrap: ``(model, **options) -> defended model`` (eval mode); options it does not use are ignored.
    """

    summary: str
    wrap: Callable[..., nn.Module]

    def build(self, model: nn.Module, **options: Any) -> nn.Module:
        return self.wrap(model, **options)


def _none(model: nn.Module, **_: Any) -> nn.Module:
    return model


def _bart(model: nn.Module, *, k: int = 5, seed: int = 0, **_: Any) -> nn.Module:
    if isinstance(model, Defended):
        raise ConfigError("this model already has a defense inside (e.g. mnist-cnn-bart): drop --defense bart, "
                          "or pass the plain classifier")
    return Defended(BaRT(k=k), model, seed=seed).eval()


def _hide(model: nn.Module, **_: Any) -> nn.Module:
    return HideProbabilities(model).eval()


#: defense name -> entry (``bastion attack/evaluate --defense NAME``)
DEFENSES: Registry[DefenseEntry] = Registry("defense", {
    "none": DefenseEntry("no defense", _none),
    "bart": DefenseEntry("a barrage of k random input transforms in front of the classifier (Raff et al. 2019)",
                         _bart),
    "hide-probs": DefenseEntry("only the top class is returned, as one-hot scores (gradient masking)", _hide),
})
