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


#: seconds between progress lines when stderr is not a terminal (a log file, a pipe, CI)
LOG_INTERVAL = 10.0


@contextmanager
def progress_bar(*, enabled: bool = True, interval: float = LOG_INTERVAL) -> Iterator[ProgressCallback]:
    """Yield a ``progress(task, done, total)`` callback rendered as rich progress bars (one per task name) in a
    terminal, and as a plain line every ``interval`` seconds otherwise (a bar redrawn in a log file shows nothing
    until the end)."""
    if not enabled:
        yield lambda task, done, total: None
        return
    if not console.is_terminal:
        with _progress_lines(interval) as callback:
            yield callback
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def callback(task: str, done: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total)

        yield callback


@contextmanager
def _progress_lines(interval: float) -> Iterator[ProgressCallback]:
    """Progress as plain lines on stderr: every ``interval`` seconds (from a timer, so a long step still shows the
    run is alive) and when a task finishes, with the time elapsed and an estimate of the time left."""
    import threading
    import time

    start = time.monotonic()
    state: dict[str, tuple[int, int | None, float]] = {}  # task -> (done, total, first update time)
    lock = threading.Lock()
    stop = threading.Event()

    def line(task: str) -> str:
        done, total, t0 = state[task]
        elapsed = time.monotonic() - t0
        text = f"[{task}] {done}" + (f"/{total} ({done / total:.0%})" if total else "")
        text += f", {_clock(time.monotonic() - start)} elapsed"
        if total and 0 < done < total:
            text += f", about {_clock(elapsed / done * (total - done))} left"
        return text

    def tick() -> None:
        while not stop.wait(interval):
            with lock:
                if not state:  # the first step has not finished yet: still say the run is alive
                    console.print(f"[working] {_clock(time.monotonic() - start)} elapsed, no step finished yet",
                                  highlight=False, markup=False, soft_wrap=True)
                for task, (done, total, _) in state.items():
                    if total is None or done < total:
                        console.print(line(task), highlight=False, markup=False, soft_wrap=True)

    timer = threading.Thread(target=tick, daemon=True)
    timer.start()

    def callback(task: str, done: int, total: int | None) -> None:
        with lock:
            first = state.get(task, (0, total, time.monotonic()))[2]
            finished = total is not None and done >= total and state.get(task, (0, total, 0.0))[0] < total
            state[task] = (done, total, first)
            if finished:
                console.print(line(task), highlight=False, markup=False, soft_wrap=True)

    try:
        yield callback
    finally:
        stop.set()
        timer.join(1.0)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
