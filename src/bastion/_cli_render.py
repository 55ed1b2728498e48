"""Rendering helpers for the CLI: a rich progress bar behind bastion's progress callback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bastion.progress import Progress as ProgressCallback

#: progress, notes, warnings and errors (stderr)
console = Console(stderr=True)
#: results: summaries, tables and listings (stdout, so that ``bastion models > models.txt`` captures them)
results = Console()


@contextmanager
def progress_bar(*, enabled: bool = True) -> Iterator[ProgressCallback]:
    """Yield a ``progress(task, done, total)`` callback rendered as rich progress bars (one per task name)."""
    if not enabled:
        yield lambda task, done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def callback(task: str, done: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total)

        yield callback
