"""Adversarial training: plain FGSM (Goodfellow et al.), FGSM with random start ("fast" AT), PGD-k (Madry et
al.) and TRADES.

* FGSM — Goodfellow, Shlens & Szegedy 2015 (https://arxiv.org/abs/1412.6572): one signed-gradient step of size
  eps from the clean image, with the *true* label, no random start; half of each batch adversarial (their
  ``0.5 J(x, y) + 0.5 J(x + eps sign(grad J), y)``). Its known failures are detected and reported each epoch:
  catastrophic overfitting (PGD accuracy on held-out images collapsing, :class:`OverfitGuard`) and label
  leaking (the model classifies FGSM examples better than clean ones, :class:`LabelLeakCheck`).
* FGSM-RS — Wong, Rice & Kolter 2020, "Fast is better than free" (https://arxiv.org/abs/2001.03994): a
  uniform random start in the eps-ball, then one signed-gradient step of ``alpha`` (default 1.25 eps),
  projected.
* PGD — Madry et al. 2018 (https://arxiv.org/abs/1706.06083): ``steps`` projected steps from a random start.
* TRADES — Zhang et al. 2019 (https://arxiv.org/abs/1901.08573): ``CE(f(x), y) + beta * KL(f(x) || f(x'))``
  with ``x'`` maximising the KL term by PGD.

Label leaking (Kurakin et al. 2017, https://arxiv.org/abs/1611.01236): crafting training examples from the
*true* label lets the model learn to recognise the perturbation itself (FGSM examples then become easier than
clean ones). By default bastion crafts from the model's own prediction on the clean image
(``craft_labels="predicted"``); ``"true"`` restores the leaky variant.

The model is switched to eval mode while crafting (so dropout/batch-norm do not change the model under
attack and its statistics do not see adversarial batches twice) and back to train mode for the update —
explicitly, on every batch. Randomness (random starts) is keyed by (seed, step, image index), so training is
deterministic and resumable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._checks import eval_mode, frozen, shown
from bastion.attacks import FGSM, PGD
from bastion.attacks.descent import Descent, LossFn, named_loss
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training.loop import EpochCallback, StepContext

log = logging.getLogger(__name__)

Recipe = Literal["fgsm", "fgsm-rs", "pgd", "trades"]
RECIPES: tuple[str, ...] = ("fgsm", "fgsm-rs", "pgd", "trades")


@dataclass(frozen=True, kw_only=True)
class AdversarialTraining:
    """The per-batch objective of adversarial training (plug into :func:`bastion.training.fit`).

    Args:
        recipe: ``"fgsm-rs"``, ``"pgd"`` or ``"trades"``.
        eps: Linf radius of the training perturbations.
        alpha: step size; default 1.25 times the current eps (FGSM-RS, Wong et al. 2020; during a ramp it
            follows the ramped eps), 0.01 (PGD and TRADES: the MNIST setting of Madry et al. and of TRADES).
        steps: PGD/TRADES inner steps (default 40 for both: with 0.01 steps they can cross the eps=0.3 ball;
            TRADES' 10-step setting is its CIFAR one, at eps 0.031).
        adv_ratio: share of each batch replaced by adversarial examples (1.0: all adversarial; 0.5: mixed);
            None: 0.5 for ``"fgsm"`` (Goodfellow et al.), 1.0 for the others.
        ramp_epochs: grow eps linearly from 0 over this many epochs (0: full eps from the start). Epochs are
            :func:`bastion.training.fit`'s (``StepContext.steps_per_epoch``); an objective called outside ``fit``
            without it takes the run to be ``epochs`` long.
        beta: TRADES trade-off.
        craft_labels: ``"predicted"`` (no label leaking) or ``"true"``; None: ``"true"`` for ``"fgsm"`` (the
            paper's), ``"predicted"`` for the others.
    """

    recipe: Recipe = "fgsm-rs"
    eps: float = 0.3
    alpha: float | None = None
    steps: int | None = None
    adv_ratio: float | None = None
    ramp_epochs: float = 0.0
    beta: float = 6.0
    craft_labels: Literal["predicted", "true"] | None = None
    epochs: int = 1  # total epochs, for the ramp (set by the recipe builder)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(f"recipe must be one of {RECIPES}, got {shown(self.recipe)}")
        if not 0 <= self.eps <= 1:
            raise ConfigError(f"eps must be in [0, 1], got {self.eps}")
        if self.adv_ratio is not None and not 0 < self.adv_ratio <= 1:
            raise ConfigError(f"adv_ratio must be in (0, 1], got {self.adv_ratio}")
        if self.craft_labels not in ("predicted", "true", None):
            raise ConfigError(f"craft_labels must be 'predicted' or 'true', got {shown(self.craft_labels)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < math.inf):
            raise ConfigError(f"alpha (the step size) must be > 0, got {shown(self.alpha)}")
        if not (isinstance(self.beta, (int, float)) and 0 <= self.beta < math.inf):
            raise ConfigError(f"beta (TRADES' trade-off) must be >= 0, got {shown(self.beta)}")
        if not (isinstance(self.ramp_epochs, (int, float)) and 0 <= self.ramp_epochs < math.inf):
            raise ConfigError(f"ramp_epochs must be >= 0, got {shown(self.ramp_epochs)}")

    def step_size_at(self, eps: float) -> float:
        """The inner step size when the current radius is ``eps``."""
        return self.alpha if self.alpha is not None else {"fgsm": eps, "fgsm-rs": 1.25 * eps}.get(self.recipe, 0.01)

    @property
    def step_size(self) -> float:
        return self.step_size_at(self.eps)

    @property
    def n_steps(self) -> int:
        return self.steps if self.steps is not None else {"fgsm": 1, "fgsm-rs": 1, "pgd": 40, "trades": 40}[self.recipe]

    @property
    def ratio(self) -> float:
        """The share of each batch made adversarial (``adv_ratio`` or the recipe's default)."""
        return self.adv_ratio if self.adv_ratio is not None else (0.5 if self.recipe == "fgsm" else 1.0)

    @property
    def labels(self) -> Literal["predicted", "true"]:
        """Which labels examples are crafted from (``craft_labels`` or the recipe's default)."""
        return self.craft_labels if self.craft_labels is not None else ("true" if self.recipe == "fgsm" else "predicted")

    def eps_at(self, ctx: StepContext) -> float:
        if self.ramp_epochs <= 0:
            return self.eps
        steps_per_epoch = ctx.steps_per_epoch or ctx.total_steps / max(self.epochs, 1)
        return self.eps * min(1.0, ctx.step / max(self.ramp_epochs * steps_per_epoch, 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------------------------------------
    def craft(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
        """Adversarial versions of ``x`` (model in eval mode, parameters frozen while crafting)."""
        eps = self.eps_at(ctx)
        if eps == 0:
            return x.detach()
        if ctx.keys.shape[0] != x.shape[0]:
            raise ConfigError(f"ctx.keys holds {ctx.keys.shape[0]} keys for a batch of {x.shape[0]}")
        threat = ThreatModel(norm="linf", eps=eps)
        alpha = self.step_size_at(eps)
        seed = (ctx.seed * 1_000_003 + ctx.step) % (2**31)
        with frozen(model), torch.enable_grad():  # crafting needs input gradients, also under no_grad()
            if self.recipe == "trades":  # maximise KL(f(x) || f(x')) from a random start
                with torch.no_grad():
                    p_clean = F.softmax(model(x), 1)
                loss = _kl_from(p_clean)
            else:
                if self.labels == "predicted":
                    with torch.no_grad():
                        y = model(x).argmax(1)
                loss = named_loss("ce", y)
            d = Descent(threat, steps=self.n_steps, step_size=alpha, random_start=self.recipe != "fgsm")
            return d.run(model, x, loss, keys=ctx.keys, seed=seed).x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        n_adv = max(1, round(self.ratio * x.shape[0]))
        with eval_mode(model):  # crafting in eval mode; each module's own flag back afterwards
            x_adv = self.craft(model, x[:n_adv], y[:n_adv], replace(ctx, keys=ctx.keys[:n_adv]))
        if self.recipe == "trades":
            logits = model(x)
            logits_adv = model(x_adv)
            kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits[:n_adv], 1), reduction="batchmean")
            return F.cross_entropy(logits, y) + self.beta * kl, {"acc": float((logits.argmax(1) == y).float().mean()),
                          "adv_acc": float((logits_adv.argmax(1) == y[:n_adv]).float().mean())}
        xb = torch.cat([x_adv, x[n_adv:]]) if n_adv < x.shape[0] else x_adv
        logits = model(xb)
        return F.cross_entropy(logits, y), {"adv_acc": float((logits[:n_adv].argmax(1) == y[:n_adv]).float().mean())}


def _kl_from(p_clean: Tensor) -> LossFn:
    """TRADES' inner loss: per sample, KL(p_clean || softmax(logits))."""
    def loss(logits: Tensor, idx: Tensor | None) -> Tensor:
        p = p_clean if idx is None else p_clean[idx]
        return F.kl_div(F.log_softmax(logits, 1), p, reduction="none").sum(1)
    return loss


@dataclass
class OverfitGuard:
    """Catastrophic-overfitting detection for FGSM training (Wong et al. 2020, section 5.2).

    After every epoch, measures PGD accuracy on a held-out batch (recorded as ``val_robust_acc``). If it
    collapses — falls below ``collapse`` times the best value of the earlier epochs — it warns and asks
    ``fit`` to roll back to the best checkpoint and stop. It keeps no state: the best value is read from the
    run's history, so a resumed run decides exactly as an uninterrupted one.
    """

    data: ImageDataset
    eps: float
    steps: int = 10
    collapse: float = 0.5
    min_best: float = 0.2
    device: str | torch.device = "cpu"

    def __call__(self, model: nn.Module, epoch: int, metrics: dict[str, Any],
                 history: list[dict[str, Any]]) -> dict[str, Any]:
        atk = PGD(eps=self.eps, steps=self.steps, step_size=2.5 * self.eps / self.steps)
        x, y = self.data.images.to(self.device), self.data.labels.to(self.device)
        acc = float(atk(model, x, y, generator=torch.Generator().manual_seed(epoch), keys=self.data.indices).robust.float().mean())
        out: dict[str, Any] = {"val_robust_acc": acc}
        best = max((float(h.get("val_robust_acc", 0.0)) for h in history), default=0.0)
        if best >= self.min_best and acc < self.collapse * best:
            log.warning("catastrophic overfitting: PGD accuracy fell from %.3f to %.3f at epoch %d; rolling back",
                        best, acc, epoch + 1)
            out.update(rollback=True, catastrophic_overfitting=True)
        return out


@dataclass
class LabelLeakCheck:
    """Label leaking (Kurakin et al. 2017): after every epoch, accuracy on held-out FGSM examples crafted from the
    true labels (``val_fgsm_acc``) against clean accuracy (``val_clean_acc``); ``label_leaking`` is True when the
    model classifies the adversarial examples better than the clean ones — it has learnt to recognise the
    perturbation, and FGSM numbers on it overstate its robustness."""

    data: ImageDataset
    eps: float
    device: str | torch.device = "cpu"

    def __call__(self, model: nn.Module, epoch: int, metrics: dict[str, Any],
                 history: list[dict[str, Any]]) -> dict[str, Any]:
        x, y = self.data.images.to(self.device), self.data.labels.to(self.device)
        res = FGSM(eps=self.eps)(model, x, y, keys=self.data.indices)
        clean, adv = float(res.clean_share.mean()), float(res.robust_share.mean())
        if adv > clean:
            log.warning("label leaking: FGSM examples are classified better than clean ones (%.3f > %.3f) at epoch "
                        "%d", adv, clean, epoch + 1)
        return {"val_fgsm_acc": adv, "val_clean_acc": clean, "label_leaking": adv > clean}


def adversarial_recipe(
    model: nn.Module, *, attack: str = "fgsm-rs", eps: float = 0.3, val: ImageDataset | None = None,
    device: str = "cpu", epochs: int = 1, ramp_epochs: float = 0.0, adv_ratio: float | None = None,
    guard_images: int = 512, alpha: float | None = None, steps: int | None = None,
) -> tuple[AdversarialTraining, list[EpochCallback], dict[str, Any], Callable[[nn.Module], nn.Module]]:
    """(objective, callbacks, metadata, wrap) for ``bastion train --defense adv``."""
    if attack not in RECIPES:
        raise ConfigError(f"unknown adversarial-training attack {shown(attack)}; valid: {', '.join(RECIPES)}")
    objective = AdversarialTraining(recipe=attack, eps=eps, epochs=epochs, ramp_epochs=ramp_epochs,  # type: ignore[arg-type]
                                    adv_ratio=adv_ratio, alpha=alpha, steps=steps)
    callbacks: list[EpochCallback] = []
    meta: dict[str, Any] = {"training": {"defense": {"kind": "adv", **objective.to_dict()}}}
    if val is not None:
        callbacks.append(OverfitGuard(data=val.spread(guard_images), eps=eps, device=device))
        if attack == "fgsm":
            callbacks.append(LabelLeakCheck(data=val.spread(guard_images), eps=eps, device=device))
        meta["monitor"] = "val_robust_acc"
    return objective, callbacks, meta, lambda m: m
