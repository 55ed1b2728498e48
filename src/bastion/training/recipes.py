"""Training defenses: which objective and callbacks ``bastion train --defense NAME`` uses (:data:`TRAINING_DEFENSES`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import nn

from bastion.data.base import ImageDataset
from bastion.registry import Registry
from bastion.training.adversarial import adversarial_recipe
from bastion.training.bart import bart_recipe
from bastion.training.loop import EpochCallback, Objective, cross_entropy


class Recipe(NamedTuple):
    """What :func:`bastion.training.fit` needs for one training defense, and how to deploy its result.

    Attributes:
        objective: the per-batch loss.
        callbacks: called after every epoch (e.g. catastrophic-overfitting detection).
        meta: recorded in the weights file (``{"training": {"defense": ...}}``) and ``monitor``, the metric that
            picks the best epoch.
        wrap: ``classifier -> deployed model`` (BaRT training deploys the barrage in front).
    """

    objective: Objective
    callbacks: list[EpochCallback]
    meta: dict[str, Any]
    wrap: Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class TrainingDefense:
    """A registered training defense.

    Attributes:
        summary: one line for listings and help texts.
        recipe: ``(model, *, val, device, **options) -> (objective, callbacks, meta, wrap)``.
        options: the options it takes (the CLI passes all of its training options; the others are dropped).
    """

    summary: str
    recipe: Callable[..., tuple[Objective, list[EpochCallback], dict[str, Any], Callable[[nn.Module], nn.Module]]]
    options: tuple[str, ...] = ()

    def build(self, model: nn.Module, *, val: ImageDataset | None = None, device: str = "cpu",
              **options: Any) -> Recipe:
        mine = {k: v for k, v in options.items() if k in self.options and v is not None}
        return Recipe(*self.recipe(model, val=val, device=device, **mine))


def _plain(model: nn.Module, **_: Any) -> tuple[Objective, list[EpochCallback], dict[str, Any], Callable[[nn.Module], nn.Module]]:
    return cross_entropy, [], {}, lambda m: m


#: training defense name -> entry (``bastion train --defense NAME``; none: plain training)
TRAINING_DEFENSES: Registry[TrainingDefense] = Registry("training defense", {
    "none": TrainingDefense("plain training on the clean images (cross-entropy)", _plain),
    "adv": TrainingDefense("adversarial training: FGSM-RS, PGD or TRADES examples in every batch",
                           adversarial_recipe,
                           ("attack", "eps", "epochs", "ramp_epochs", "adv_ratio", "alpha", "steps")),
    "bart": TrainingDefense("training on BaRT barrages of the training images (deployed with the barrage in front)",
                            bart_recipe, ("k", "variants", "clean", "groups", "n_samples")),
})


def build_training(defense: str | None, model: nn.Module, *, val: ImageDataset | None = None, device: str = "cpu",
                   **options: Any) -> Recipe:
    """The :class:`Recipe` of the training defense ``defense`` (None: plain training); options the defense does
    not take are dropped."""
    return TRAINING_DEFENSES.get(defense or "none").build(model, val=val, device=device, **options)
