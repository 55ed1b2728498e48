"""The lecture's claims, each checked against numbers the demo measures.

A :class:`Claim` row holds what the lecture (or the paper it cites) says, the setting it was measured in, the
numbers, and a verdict computed from those numbers by a small rule written next to it — never typed in. The
rules are pure functions of the numbers, so they are tested on their own (``tests/demo/test_claims.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["holds", "does not hold", "depends"]


@dataclass(frozen=True)
class Claim:
    """One claim of the lecture and what the demo's run says about it.

    Attributes:
        key: a short stable name (results.json).
        claim: what the lecture says, in its words as far as they are known.
        setting: where it was measured (model, data, attack, images).
        numbers: the measurements the verdict is computed from (name -> value).
        verdict: ``"holds"``, ``"does not hold"`` or ``"depends"``.
        why: one sentence: the rule applied to the numbers.
    """

    key: str
    claim: str
    setting: str
    numbers: dict[str, float]
    verdict: Verdict
    why: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` measured on ``n`` images (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


# ---- the rules ----------------------------------------------------------------------------------------------

def jsma_vs_fgsm(*, fgsm_seconds: float, jsma_seconds: float, fgsm_l0: float, jsma_l0: float, fgsm_l2: float,
                 jsma_l2: float, fgsm_linf: float, jsma_linf: float) -> tuple[Verdict, str]:
    """"FGSM is faster; JSMA changes fewer pixels and stays closer to the original": faster and fewer pixels
    must both hold; 'closer' depends on the norm when JSMA is closer in L2 but not in Linf."""
    faster, sparser = fgsm_seconds < jsma_seconds, jsma_l0 < fgsm_l0
    closer_l2, closer_linf = jsma_l2 < fgsm_l2, jsma_linf < fgsm_linf
    if not (faster and sparser):
        return "does not hold", ("FGSM is not faster" if not faster else "JSMA does not change fewer pixels")
    if closer_l2 and closer_linf:
        return "holds", "FGSM is faster, JSMA changes fewer pixels and is closer in L2 and Linf"
    if closer_l2 or closer_linf:
        return "depends", ("FGSM is faster and JSMA changes fewer pixels; JSMA is closer in "
                           f"{'L2' if closer_l2 else 'Linf'} but not in {'Linf' if closer_l2 else 'L2'}: "
                           "'closer' depends on the norm")
    return "does not hold", "JSMA changes fewer pixels but is further from the original in L2 and Linf"


def only_against_original_examples(*, transferred: float, white_box: float, clean: float,
                                   margin: float = 0.2) -> tuple[Verdict, str]:
    """"Adversarial training only helps against examples crafted on the original model": it holds when the
    trained model resists the examples made on the original model (accuracy within ``margin`` of clean) while a
    white-box attack on the trained model itself brings it far lower (by more than ``margin``)."""
    resists_transfer = transferred >= clean - margin
    broken_itself = white_box <= transferred - margin
    if resists_transfer and broken_itself:
        return "holds", (f"examples from the original model leave {transferred:.0%}, an attack on the trained "
                         f"model itself {white_box:.0%}")
    if resists_transfer:
        return "does not hold", (f"the trained model also resists attacks crafted on itself ({white_box:.0%}, "
                                 f"transferred {transferred:.0%})")
    return "does not hold", f"the trained model does not even resist the transferred examples ({transferred:.0%})"


def regularizer_does_not_help(*, base: float, regularized: float, margin: float = 0.05) -> tuple[Verdict, str]:
    """"Weight decay (dropout) does not help": it holds when robust accuracy with the regularizer is within
    ``margin`` of (or below) the same training without it."""
    if regularized <= base + margin:
        return "holds", f"robust accuracy {regularized:.1%} with it against {base:.1%} without"
    return "does not hold", f"robust accuracy rises from {base:.1%} to {regularized:.1%}"


def randomness_stops_attacks(*, naive: float, adaptive: float, clean: float,
                             adaptive_ci: tuple[float, float] | None = None) -> tuple[Verdict, str]:
    """"BaRT stops PGD and FGSM": it holds only when an adaptive attack (EOT + BPDA) also leaves most of the
    clean accuracy (more than half of it, the upper end of its interval included); it does not hold when the
    adaptive attack brings accuracy below half of the naive attack's."""
    hi = adaptive_ci[1] if adaptive_ci is not None else adaptive
    if adaptive >= clean / 2:
        return "holds", f"even the adaptive attack leaves {adaptive:.0%} (clean {clean:.0%})"
    if hi <= naive / 2:
        return "does not hold", (f"naive attacks leave {naive:.0%}, but an adaptive attack (EOT + BPDA) only "
                                 f"{adaptive:.0%}: the robustness came from randomness and non-differentiable steps")
    return "depends", f"the adaptive attack leaves {adaptive:.0%} against the naive {naive:.0%}: not clearly lower"


def masking_is_not_a_defense(*, naive: float, substitute: float, margin: float = 0.2) -> tuple[Verdict, str]:
    """"Hiding the probabilities does not protect the model": it holds when an attacker who only sees labels
    (a substitute model trained from label queries) takes accuracy at least ``margin`` below what the naive
    gradient attack leaves."""
    if substitute <= naive - margin:
        return "holds", f"naive PGD leaves {naive:.0%}, the label-only substitute attack {substitute:.0%}"
    return "does not hold", f"the substitute attack only reached {substitute:.0%} (naive {naive:.0%})"


def linear_table(*, measured: dict[float, float], quoted: dict[float, float], tolerance: float = 0.05,
                 ) -> tuple[Verdict, str]:
    """The lecture's error-vs-eps table for logistic regression: it holds when every measured error is within
    ``tolerance`` of the quoted one at the same eps."""
    common = sorted(set(measured) & set(quoted))
    off = [e for e in common if abs(measured[e] - quoted[e]) > tolerance]
    if not off:
        return "holds", "every measured error is within 5 points of the quoted one"
    worst = max(off, key=lambda e: abs(measured[e] - quoted[e]))
    return "does not hold", (f"at eps {worst:g} the error is {measured[worst]:.1%}, quoted {quoted[worst]:.1%}")
