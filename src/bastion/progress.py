"""Progress reporting without printing: the library calls a callback, front ends render it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called as ``progress(task, done, total)``; ``total`` may be None when unknown."""

    def __call__(self, task: str, done: int, total: int | None) -> None: ...


def no_progress(task: str, done: int, total: int | None) -> None:
    """The default callback: does nothing."""
