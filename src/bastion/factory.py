"""Building attacks and defended models from names and options (shared by the CLI and the web demo)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from bastion.attacks import ATTACKS, Attack
from bastion.errors import ConfigError, UnknownNameError


def attack_options(name: str) -> set[str]:
    """The options (dataclass fields) of the registered attack ``name``."""
    cls = ATTACKS.get(name)
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def make_attack(name: str, **options: Any) -> Attack:
    """Build a registered attack; ``None`` options are dropped, options the attack does not take are refused."""
    given = {k: v for k, v in options.items() if v is not None}
    fields = attack_options(name)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"attack {name!r} does not take {unknown}; its options: {sorted(fields)}")
    return ATTACKS.create(name, **given)


def make_attack_lenient(name: str, **options: Any) -> Attack:
    """Like :func:`make_attack` but silently ignores options the attack does not take (for suites)."""
    fields = attack_options(name)
    return ATTACKS.create(name, **{k: v for k, v in options.items() if k in fields and v is not None})


DEFENSES = ("none", "bart", "hide-probs")


def apply_defense(model: nn.Module, defense: str | None, *, k: int = 5, seed: int = 0) -> nn.Module:
    """Wrap ``model`` in a test-time defense by name (``none``, ``bart``, ``hide-probs``)."""
    if defense in (None, "none"):
        return model
    if defense == "hide-probs":
        from bastion.defenses import HideProbabilities

        return HideProbabilities(model).eval()
    if defense == "bart":
        from bastion.defenses import Defended
        from bastion.defenses.bart import BaRT

        if isinstance(model, Defended):
            return model
        return Defended(BaRT(k=k), model, seed=seed).eval()
    raise UnknownNameError(f"unknown defense {defense!r}; valid: {', '.join(DEFENSES)}")


def parse_eps(spec: str) -> list[float]:
    """``"0:0.3:0.05"`` (start:stop:step, stop included) or ``"0.1,0.2,0.3"``."""
    try:
        if ":" in spec:
            start, stop, step = (float(v) for v in spec.split(":"))
            if step <= 0:
                raise ValueError
            n = int(round((stop - start) / step))
            return [round(start + i * step, 10) for i in range(n + 1)]
        return [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"cannot parse eps {spec!r}; use start:stop:step (e.g. 0:0.3:0.05) or a list (0.1,0.3)") from None
