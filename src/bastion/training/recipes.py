"""Training recipes: which objective and callbacks ``bastion train --defense ...`` uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bastion._checks import shown
from bastion.data.base import ImageDataset
from bastion.errors import UnknownNameError
from bastion.training.loop import EpochCallback, Objective, cross_entropy


def build_training(
    defense: str | None,
    model: nn.Module,
    *,
    attack: str = "fgsm-rs",
    eps: float = 0.3,
    k: int = 5,
    val: ImageDataset | None = None,
    device: str = "cpu",
    **options: Any,
) -> tuple[Objective, list[EpochCallback], dict[str, Any], Callable[[nn.Module], nn.Module]]:
    """(objective, callbacks, metadata, wrap) for a defense name; ``wrap`` builds the deployed model."""
    if defense is None:
        return cross_entropy, [], {}, lambda m: m
    if defense == "adv":
        from bastion.training.adversarial import adversarial_recipe

        return adversarial_recipe(model, attack=attack, eps=eps, val=val, device=device, **options)
    if defense == "bart":
        from bastion.training.bart import bart_recipe

        return bart_recipe(model, k=k, val=val, device=device, **options)
    raise UnknownNameError(f"unknown defense {shown(defense)}; valid: adv, bart")
