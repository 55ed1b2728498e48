"""Training on barrages: fine-tune a classifier on BaRT variants of its training images.

BaRT's accuracy on clean inputs depends on a classifier that has seen transformed images: the paper
fine-tunes on barrage variants. Each step here draws ``variants`` independent barrages of every image of
the batch (optionally keeping the clean batch too) and minimises the cross-entropy over all of them; every
epoch draws new barrages, so each image is seen under many variants over training. The
randomness comes from a generator seeded by ``(ctx.seed, ctx.step)``, so training is deterministic and a
resumed run sees the same barrages.

``bastion train --defense bart --k 5 ...`` uses :func:`bart_recipe` (see :mod:`bastion.training.recipes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data.base import ImageDataset
from bastion.defenses.bart.barrage import BaRT
from bastion.defenses.base import Defended
from bastion.errors import ConfigError
from bastion.training.loop import EpochCallback, Objective, StepContext


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The CPU generator of one training step (a pure function of the run's seed and the step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def barrage_objective(barrage: BaRT, *, variants: int = 1, clean: bool = True) -> Objective:
    """Cross-entropy on ``variants`` barrages of each image (plus the clean image when ``clean``)."""
    if variants < 1:
        raise ConfigError(f"variants must be >= 1, got {variants}")

    def objective(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        g = step_generator(ctx.seed, ctx.step)
        with torch.no_grad():
            xb = barrage(x.repeat(variants, 1, 1, 1), generator=g)
        yb = y.repeat(variants)
        n_bart = xb.shape[0]
        if clean:
            xb, yb = torch.cat([xb, x]), torch.cat([yb, y])
        logits = model(xb)
        hit = (logits.argmax(1) == yb).float()
        return F.cross_entropy(logits, yb), {"acc_bart": float(hit[:n_bart].mean()), "acc": float(hit.mean())}

    objective.identity = {"objective": "barrage", "bart": barrage.to_dict(), "variants": variants,  # type: ignore[attr-defined]
                          "clean": clean}
    return objective


def barrage_accuracy_callback(barrage: BaRT, val: ImageDataset, *, limit: int = 2000, seed: int = 1234,
                              batch_size: int = 500, device: str | torch.device = "cpu") -> EpochCallback:
    """Per-epoch ``val_bart_acc``: accuracy through one fixed-seed barrage on the first ``limit`` val images."""
    x_all, y_all = val.images[:limit], val.labels[:limit]

    @torch.no_grad()
    def callback(model: nn.Module, epoch: int, metrics: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        correct = 0
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i : i + batch_size].to(device)
            y = y_all[i : i + batch_size].to(device)
            correct += int((model(barrage(x, generator=g)).argmax(1) == y).sum())
        return {"val_bart_acc": correct / max(x_all.shape[0], 1)}

    return callback


def bart_recipe(
    model: nn.Module,
    *,
    k: int = 5,
    val: ImageDataset | None = None,
    device: str | torch.device = "cpu",
    groups: Sequence[Any] | None = None,
    variants: int = 1,
    clean: bool = True,
    n_samples: int = 1,
) -> tuple[Objective, list[EpochCallback], dict[str, Any], Callable[[nn.Module], nn.Module]]:
    """(objective, callbacks, metadata, wrap) of BaRT training, as :func:`bastion.training.recipes.build_training` expects.

    Args:
        model: the classifier being trained (unused here; kept for the recipe signature).
        k: groups per barrage.
        val: validation data (adds a per-epoch ``val_bart_acc`` and makes it the monitored metric).
        device: where training runs.
        groups: BaRT groups (default: all that apply).
        variants: barrage variants of each training image per step.
        clean: also train on the clean images.
        n_samples: draws the deployed model averages over (stored in the metadata).
    """
    barrage = BaRT(k=k, groups=groups, n_samples=n_samples)
    callbacks: list[EpochCallback] = []
    meta: dict[str, Any] = {"training": {"defense": {"kind": "bart", "bart": barrage.to_dict(),
                                                     "variants": variants, "clean": clean}}}
    if val is not None:
        callbacks.append(barrage_accuracy_callback(barrage, val, device=device))
        meta["monitor"] = "val_bart_acc"
    return barrage_objective(barrage, variants=variants, clean=clean), callbacks, meta, lambda net: Defended(barrage, net)
