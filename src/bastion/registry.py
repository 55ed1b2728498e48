"""A small, explicit, read-only name -> entry registry (no import-time decorators, no global mutation).

One registry per concept (attacks, inference-time defenses, training defenses, BaRT transforms, pretrained
models). Entries carry their own metadata (a label, a one-line summary, defaults for the front ends); the CLI's
choices, the web page's menus and the contract tests are derived from them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from bastion._checks import shown
from bastion.errors import UnknownNameError

E = TypeVar("E")


class Registry(Generic[E]):
    """Maps names to entries. Built once from a literal mapping; lookups of unknown names list valid ones.

    :meth:`create` builds an entry: it calls the entry's ``build`` method when it has one, else the entry itself
    (a class or a factory function).
    """

    def __init__(self, kind: str, entries: Mapping[str, E]) -> None:
        self.kind = kind
        self._entries: Mapping[str, E] = MappingProxyType(dict(entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return [n for n in sorted(self._entries) if fnmatch.fnmatch(n, pattern)]

    def items(self) -> list[tuple[str, E]]:
        """(name, entry) pairs in the order the registry was written."""
        return list(self._entries.items())

    def get(self, name: str) -> E:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {shown(name)}; valid names: {valid}") from None

    def create(self, name: str, **options: Any) -> Any:
        """Build ``name``; options that are ``None`` are dropped so the entry's defaults apply."""
        entry = self.get(name)
        build: Callable[..., Any] = getattr(entry, "build", None) or entry  # type: ignore[assignment]
        return build(**{k: v for k, v in options.items() if v is not None})
