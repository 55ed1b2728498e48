"""Building attacks and defended models from names and options (shared by the CLI and the web demo)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from torch import nn

from bastion._checks import shown
from bastion.attacks import ATTACKS, Attack
from bastion.defenses import DEFENSES
from bastion.errors import ConfigError


def attack_options(name: str) -> set[str]:
    """The options (dataclass fields) of the registered attack ``name``."""
    cls = ATTACKS.get(name).cls
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def make_attack(name: str, *, checked: frozenset[str] | set[str] = frozenset(), **options: Any) -> Attack:
    """Build a registered attack; ``None`` options are dropped, options the attack does not take are refused.

    Options named in ``checked`` (values typed by a user, e.g. the CLI's ``--set``) are kept even when None
    and must match the field's type (a bool for a flag, a number for a number, a pair for bounds...)."""
    given = {k: v for k, v in options.items() if v is not None or k in checked}
    fields = attack_options(name)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"attack {shown(name)} does not take {unknown}; its options: {sorted(fields)}")
    if checked:
        hints = typing.get_type_hints(ATTACKS.get(name).cls)
        for k in sorted(set(checked) & set(given)):
            given[k] = _typed(name, k, hints.get(k, Any), given[k])
    atk: Attack = ATTACKS.create(name, **given)
    return atk


def _typed(attack: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the field type ``hint`` (lists become tuples for tuple fields)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _typed(attack, key, inner[0] if len(inner) == 1 else Any, value)
    bad = ConfigError(f"{attack} option {key} expects {_describe(hint)}, got {shown(value)}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad
    elif hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad
        value = float(value)
    elif hint is str or origin is typing.Literal:
        if not isinstance(value, str):
            raise bad
    elif origin is tuple:
        if not isinstance(value, (list, tuple)) or (Ellipsis not in args and len(value) != len(args)):
            raise bad
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in value):
            raise bad
        value = tuple(float(v) for v in value)
    elif hint is not Any:  # tensors and other objects (e.g. HSJ's starting points)
        raise ConfigError(f"{attack} option {key} cannot be set from the command line")
    return value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is bool:
        return "true or false"
    if hint in (int, float):
        return f"a number ({hint.__name__})"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin is tuple:
        return "a pair of numbers, e.g. [0, 1]"
    return getattr(hint, "__name__", str(hint))


def make_attack_lenient(name: str, **options: Any) -> Attack:
    """Like :func:`make_attack` but silently ignores options the attack does not take (for suites)."""
    fields = attack_options(name)
    atk: Attack = ATTACKS.create(name, **{k: v for k, v in options.items() if k in fields and v is not None})
    return atk


def apply_defense(model: nn.Module, defense: str | None, *, k: int = 5, seed: int = 0) -> nn.Module:
    """Wrap ``model`` in a registered inference-time defense (:data:`bastion.defenses.DEFENSES`)."""
    return DEFENSES.get(defense or "none").build(model, k=k, seed=seed)


#: the most radii one evaluation takes (each is a full attack suite)
MAX_EPS_VALUES = 100


def parse_eps(spec: str) -> list[float]:
    """``"0:0.3:0.05"`` (start:stop:step, stop included) or ``"0.1,0.2,0.3"``."""
    usage = f"cannot parse eps {spec!r}; use start:stop:step (e.g. 0:0.3:0.05) or a list (0.1,0.3)"
    numbers = _floats(spec.split(":") if ":" in spec else [v for v in spec.split(",") if v.strip()])
    if numbers is None:
        raise ConfigError(usage)
    if ":" in spec:
        if len(numbers) != 3 or not numbers[2] > 0 or not all(map(math.isfinite, numbers)):
            raise ConfigError(usage)
        start, stop, step = numbers
        if stop < start:
            raise ConfigError(f"eps range {shown(spec)} runs backwards: start:stop:step needs start <= stop")
        count = math.floor((stop - start) / step + 1e-9) + 1  # values beyond stop are left out
        if count > MAX_EPS_VALUES:  # checked before the list is made
            raise ConfigError(f"eps range {shown(spec)} has {count} values; at most {MAX_EPS_VALUES} (use a larger step)")
        numbers = [round(start + i * step, 10) for i in range(count)]
    if not numbers:
        raise ConfigError(f"eps {shown(spec)} gives no values")
    if len(numbers) > MAX_EPS_VALUES:
        raise ConfigError(f"eps {shown(spec)} has {len(numbers)} values; at most {MAX_EPS_VALUES}")
    return numbers


def _floats(parts: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in parts]
    except ValueError:
        return None
