"""A small, explicit, read-only name -> factory registry (no import-time decorators, no global mutation)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from bastion._checks import shown
from bastion.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. Built once from a literal mapping; lookups of unknown names list valid ones."""

    def __init__(self, kind: str, entries: Mapping[str, Callable[..., T]]) -> None:
        self.kind = kind
        self._entries: Mapping[str, Callable[..., T]] = MappingProxyType(dict(entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return [n for n in sorted(self._entries) if fnmatch.fnmatch(n, pattern)]

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {shown(name)}; valid names: {valid}") from None

    def create(self, name: str, **options: Any) -> T:
        """Build ``name``; options that are ``None`` are dropped so factory defaults apply."""
        return self.get(name)(**{k: v for k, v in options.items() if v is not None})
