"""The demo's verdicts are computed from the numbers in their row (bastion.demo.claims)."""

from __future__ import annotations

import pytest

from bastion.demo import claims as rules


def test_jsma_vs_fgsm_verdicts_follow_the_numbers():
    base = dict(fgsm_seconds=0.001, jsma_seconds=0.05, fgsm_l0=500.0, jsma_l0=30.0)
    assert rules.jsma_vs_fgsm(**base, fgsm_l2=6.0, jsma_l2=3.0, fgsm_linf=0.3, jsma_linf=0.2)[0] == "holds"
    v, why = rules.jsma_vs_fgsm(**base, fgsm_l2=6.0, jsma_l2=3.0, fgsm_linf=0.3, jsma_linf=1.0)
    assert v == "depends" and "L2" in why and "Linf" in why
    assert rules.jsma_vs_fgsm(**{**base, "fgsm_seconds": 0.1}, fgsm_l2=6, jsma_l2=3, fgsm_linf=0.3,
                              jsma_linf=0.2)[0] == "does not hold"
    assert rules.jsma_vs_fgsm(**{**base, "jsma_l0": 600.0}, fgsm_l2=6, jsma_l2=3, fgsm_linf=0.3,
                              jsma_linf=0.2)[0] == "does not hold"


@pytest.mark.parametrize("transferred, white_box, expected", [
    (0.95, 0.10, "holds"),          # resists the original's examples, broken by an attack on itself
    (0.97, 0.93, "does not hold"),  # resists both (PGD training)
    (0.30, 0.05, "does not hold"),  # does not even resist the transferred ones
])
def test_only_against_original_examples(transferred, white_box, expected):
    assert rules.only_against_original_examples(transferred=transferred, white_box=white_box, clean=0.99)[0] == expected


def test_regularizer_verdict_has_a_margin():
    assert rules.regularizer_does_not_help(base=0.10, regularized=0.12)[0] == "holds"
    assert rules.regularizer_does_not_help(base=0.10, regularized=0.30)[0] == "does not hold"


def test_bart_verdict_uses_the_adaptive_attack_and_its_interval():
    assert rules.randomness_stops_attacks(naive=0.9, adaptive=0.8, clean=0.97)[0] == "holds"
    assert rules.randomness_stops_attacks(naive=0.6, adaptive=0.05, clean=0.97, adaptive_ci=(0.02, 0.1))[0] == "does not hold"
    # the interval reaches above half of the naive accuracy: not clearly lower
    assert rules.randomness_stops_attacks(naive=0.3, adaptive=0.12, clean=0.97, adaptive_ci=(0.05, 0.2))[0] == "depends"


def test_masking_and_linear_table():
    assert rules.masking_is_not_a_defense(naive=0.99, substitute=0.3)[0] == "holds"
    assert rules.masking_is_not_a_defense(naive=0.99, substitute=0.9)[0] == "does not hold"
    quoted = {0.0: 0.029, 0.2: 0.076, 0.5: 0.226}
    assert rules.linear_table(measured={0.0: 0.03, 0.2: 0.08, 0.5: 0.2}, quoted=quoted)[0] == "holds"
    v, why = rules.linear_table(measured={0.0: 0.074, 0.2: 1.0, 0.5: 1.0}, quoted=quoted)
    assert v == "does not hold" and "0.2" in why or "0.5" in why


def test_wilson_interval():
    lo, hi = rules.wilson(0.05, 320)
    assert lo < 0.05 < hi and hi - lo < 0.06
    assert rules.wilson(0.0, 10)[0] == 0.0 and rules.wilson(1.0, 10)[1] == 1.0
