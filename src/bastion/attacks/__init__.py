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
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.jsma import JSMA
from bastion.attacks.min_norm import MinNormPGD
from bastion.attacks.oracle import Oracle, QueryBudgetError
from bastion.attacks.pgd import PGD
from bastion.attacks.square import Square
from bastion.attacks.substitute import Substitute, SubstituteAttack, SubstituteTraining, pick_seed_set
from bastion.attacks.transfer import TransferAttack
from bastion.registry import Registry

__all__ = [
    "Attack", "AttackResult", "FGSM", "BIM", "PGD", "JSMA", "Square", "HopSkipJump", "MinNormPGD", "Oracle", "QueryBudgetError",
    "TransferAttack", "SubstituteAttack", "SubstituteTraining", "Substitute", "pick_seed_set",
    "ATTACKS", "bpda", "eot", "train_surrogate",
]

#: attack name -> class (for the CLI, the web demo, the evaluator and the contract tests)
ATTACKS: Registry[Attack] = Registry(
    "attack",
    {"fgsm": FGSM, "bim": BIM, "pgd": PGD, "jsma": JSMA, "square": Square, "hsj": HopSkipJump, "min-norm": MinNormPGD},
)
