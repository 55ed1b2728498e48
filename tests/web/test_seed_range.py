"""The documented seed range, [0, 2**63), is accepted in full (seeds above 2**53 used to be refused)."""

import pytest

from bastion.errors import ConfigError
from bastion.web import handlers
from bastion.web.context import DemoContext


@pytest.mark.parametrize("seed", [0, 2**53 + 1, 2**62 + 12345, 2**63 - 1])
def test_every_seed_below_2_63_is_accepted_exactly(ctx: DemoContext, seed: int) -> None:
    req = handlers.parse_attack({"attack": "fgsm", "eps": 0.1, "seed": seed, "image": {"gallery": 0}}, ctx)
    assert req.seed == seed


@pytest.mark.parametrize("seed, match", [(2**63, r"seed must be an integer in \[0, 2\*\*63\)"),
                                         (10**30, "out of range"), (2.0**60, "out of range"), (-1, "seed")])
def test_seeds_outside_the_range_or_inexact_are_refused(ctx: DemoContext, seed: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        handlers.parse_attack({"attack": "fgsm", "eps": 0.1, "seed": seed, "image": {"gallery": 0}}, ctx)
