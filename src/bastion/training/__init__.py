"""Training: one deterministic, resumable loop (:func:`fit`) and the objectives that plug into it.

* :mod:`bastion.training.loop` — :func:`fit`, :class:`TrainConfig`, :func:`accuracy`;
* :mod:`bastion.training.adversarial` — adversarial training (FGSM-RS, PGD, TRADES) and catastrophic-overfitting
  detection;
* :mod:`bastion.training.bart` — training on BaRT barrages;
* :mod:`bastion.training.surrogate` — learned BPDA approximations of a defense (:func:`train_surrogate`);
* :mod:`bastion.training.substitute` — the substitute-model attack of Papernot et al. 2017, which trains a model
  of its own from the target's labels;
* :mod:`bastion.training.recipes` — which objective ``bastion train --defense ...`` uses.
"""

from __future__ import annotations

from bastion.training.adversarial import AdversarialTraining, OverfitGuard
from bastion.training.loop import History, StepContext, TrainConfig, accuracy, cross_entropy, fit
from bastion.training.substitute import Substitute, SubstituteAttack, SubstituteTraining, pick_seed_set
from bastion.training.surrogate import SurrogateNet, SurrogateReport, train_surrogate

__all__ = [
    "fit", "TrainConfig", "StepContext", "History", "accuracy", "cross_entropy",
    "AdversarialTraining", "OverfitGuard",
    "train_surrogate", "SurrogateNet", "SurrogateReport",
    "SubstituteAttack", "SubstituteTraining", "Substitute", "pick_seed_set",
]
