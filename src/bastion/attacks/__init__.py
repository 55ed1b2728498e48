"""Attacks: configuration objects called as ``attack(model, x, y, target=None, generator=None)``.

>>> from bastion.attacks import PGD
>>> atk = PGD(eps=0.3, steps=40, step_size=0.01)
>>> atk.to_dict()["steps"]
40
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.attacks.adaptive import Adaptive, bpda, eot
from bastion.attacks.apgd import APGD
from bastion.attacks.base import Attack, AttackResult, MinimumNormAttack
from bastion.attacks.bim import BIM
from bastion.attacks.cw import CW
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.fab import FAB
from bastion.attacks.fgsm import FGSM
from bastion.attacks.fmn import FMN
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.jsma import JSMA
from bastion.attacks.min_norm import MinNormPGD
from bastion.attacks.oracle import Oracle, QueryBudgetError
from bastion.attacks.pgd import PGD
from bastion.attacks.square import Square
from bastion.attacks.transfer import TransferAttack
from bastion.registry import Registry

__all__ = [
    "Attack", "AttackResult", "MinimumNormAttack", "FGSM", "BIM", "PGD", "APGD", "FAB", "JSMA", "Square", "HopSkipJump",
    "MinNormPGD", "CW", "DeepFool", "FMN", "Oracle", "QueryBudgetError", "TransferAttack", "ATTACKS", "AttackEntry",
    "bpda", "eot", "Adaptive",
]

@dataclass(frozen=True, kw_only=True)
class AttackEntry:
    """A registered attack and what the front ends need to know about it.

    Attributes:
        cls: the attack class.
        label: its name for people ("PGD").
        summary: one line: what it does, after which paper.
        budget: the option a budget slider or ``--eps`` sets (``"eps"``; ``"gamma"`` for JSMA); None when the
            attack has no budget (minimum-norm attacks).
        budget_label: what that budget means, for a slider.
        web: the options the web demo sets differently from the library's defaults (None: not in the demo).
        web_reason: why the demo's options differ from the library's defaults.
    """

    cls: type[Attack]
    label: str
    summary: str
    budget: str | None = "eps"
    budget_label: str = "eps: the largest change of any pixel (Linf)"
    web: Mapping[str, Any] | None = None
    web_reason: str = ""

    def build(self, **options: Any) -> Attack:
        return self.cls(**options)


#: attack name -> entry (for the CLI, the web demo, the evaluator and the contract tests)
ATTACKS: Registry[AttackEntry] = Registry("attack", {
    "fgsm": AttackEntry(cls=FGSM, label="FGSM", web={},
                        summary="one step of size eps along the sign of the loss gradient (Goodfellow et al. 2015)"),
    "bim": AttackEntry(cls=BIM, label="BIM", web={},
                       summary="iterated FGSM with step eps/steps, kept in the eps-ball (Kurakin et al. 2017)"),
    "pgd": AttackEntry(cls=PGD, label="PGD", web={"steps": 20},
                       web_reason="an interactive page runs an attack at every move of the slider: 20 steps answer in "
                                  "a fraction of a second on a CPU and already break the standard model",
                       summary="projected gradient descent from a random start, step 2.5 eps/steps (Madry et al. 2018)"),
    "apgd": AttackEntry(cls=APGD, label="APGD",
                        summary="PGD with momentum and a self-adapting step size; loss ce or dlr, targets=k for APGD-T "
                                "(Croce & Hein 2020)"),
    "fab": AttackEntry(cls=FAB, label="FAB-T",
                       summary="targeted fast adaptive boundary attack: projections onto the linearised boundary, kept "
                               "within eps (Croce & Hein 2020)"),
    "jsma": AttackEntry(cls=JSMA, label="JSMA", budget="gamma", web={},
                        budget_label="gamma: the largest fraction of pixels changed (L0)",
                        summary="changes a few pixels chosen by the Jacobian saliency map (Papernot et al. 2016)"),
    "square": AttackEntry(cls=Square, label="Square",
                          summary="random search over squares of the Linf ball, scores only (Andriushchenko et al. 2020)"),
    "hsj": AttackEntry(cls=HopSkipJump, label="HopSkipJump", budget=None, budget_label="",
                       summary="walks along the decision boundary from labels only (Chen et al. 2020)"),
    "min-norm": AttackEntry(cls=MinNormPGD, label="minimum-norm PGD", budget=None, budget_label="",
                            summary="the smallest L2 radius at which PGD succeeds, by bisection"),
    "cw": AttackEntry(cls=CW, label="Carlini-Wagner L2", budget=None, budget_label="",
                      summary="the smallest L2 perturbation by Adam in tanh space, with a binary search over the "
                              "trade-off constant c (Carlini & Wagner 2017)"),
    "deepfool": AttackEntry(cls=DeepFool, label="DeepFool", budget=None, budget_label="",
                            summary="steps to the nearest boundary of the linearised model, L2 or Linf "
                                    "(Moosavi-Dezfooli et al. 2016)"),
    "fmn": AttackEntry(cls=FMN, label="FMN", budget=None, budget_label="",
                       summary="the fast minimum-norm attack: a walk in an Lp ball (L0, L1, L2, Linf) whose radius "
                               "adapts to the boundary (Pintor et al. 2021)"),
})
