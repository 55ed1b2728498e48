"""Building attacks and defended models from names and options (shared by the CLI and the web demo)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
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
    return ATTACKS.create(name, **given)


def _typed(attack: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the field type ``hint`` (lists become tuples for tuple fields)."""
    args, origin = typing.get_args(hint), typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _typed(attack, key, inner[0] if len(inner) == 1 else Any, value)
    if origin is tuple:
        ok = (isinstance(value, (list, tuple)) and (Ellipsis in args or len(value) == len(args))
              and all(map(_is_number, value)))
        want = "a pair of numbers, e.g. [0, 1]"
    elif origin is typing.Literal:
        ok, want = isinstance(value, str), "one of " + ", ".join(map(repr, args))
    elif hint in _ACCEPTS:
        accepts, want = _ACCEPTS[hint]
        ok = accepts(value)
    elif hint is Any:
        return value
    else:  # tensors and other objects (e.g. HSJ's starting points)
        raise ConfigError(f"{attack} option {key} cannot be set from the command line")
    if not ok:
        raise ConfigError(f"{attack} option {key} expects {want}, got {shown(value)}")
    return tuple(map(float, value)) if origin is tuple else float(value) if hint is float else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: what a value typed by the user must be for a field of each plain type, and how a message says it
_ACCEPTS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: _is_number(v) and isinstance(v, int), "a number (int)"),
    float: (_is_number, "a number (float)"),
    str: (lambda v: isinstance(v, str), "str")}


def make_attack_lenient(name: str, **options: Any) -> Attack:
    """Like :func:`make_attack` but silently ignores options the attack does not take (for suites)."""
    fields = attack_options(name)
    return ATTACKS.create(name, **{k: v for k, v in options.items() if k in fields})


def apply_defense(model: nn.Module, defense: str | None, *, k: int = 5, seed: int = 0) -> nn.Module:
    """Wrap ``model`` in a registered inference-time defense (:data:`bastion.defenses.DEFENSES`)."""
    return DEFENSES.get(defense or "none").build(model, k=k, seed=seed)


#: the most radii one evaluation takes (each is a full attack suite)
MAX_EPS_VALUES = 100


def parse_eps(spec: str) -> list[float]:
    """``"0:0.3:0.05"`` (start:stop:step, stop included) or ``"0.1,0.2,0.3"``."""
    usage = f"cannot parse eps {spec!r}; use start:stop:step (e.g. 0:0.3:0.05) or a list (0.1,0.3)"
    parts = spec.split(":") if ":" in spec else [v for v in spec.split(",") if v.strip()]
    try:
        numbers = [float(v) for v in parts]
    except ValueError:
        raise ConfigError(usage) from None
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
