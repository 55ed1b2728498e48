"""Attacks: configuration objects called as ``attack(model, x, y, target=None, generator=None)``.

>>> from bastion.attacks import PGD
>>> atk = PGD(eps=0.3, steps=40, step_size=0.01)
>>> atk.to_dict()["steps"]
40
"""

from __future__ import annotations

from bastion.attacks.adaptive import bpda, eot, train_surrogate
from bastion.attacks.base import Attack, AttackResult
from bastion.attacks.bim import BIM
from bastion.attacks.fgsm import FGSM
from bastion.attacks.pgd import PGD
from bastion.registry import Registry

__all__ = ["Attack", "AttackResult", "FGSM", "BIM", "PGD", "ATTACKS", "bpda", "eot", "train_surrogate"]

#: attack name -> class (for the CLI, the web demo, the evaluator and the contract tests)
ATTACKS: Registry[Attack] = Registry("attack", {"fgsm": FGSM, "bim": BIM, "pgd": PGD})
