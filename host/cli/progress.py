"""Progress of a long command (commission --site, plan) on a terminal, through rich; nothing
at all with --json or when standard error is not a terminal, so pipes and logs stay clean."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class Steps:
    """A bar that `to()` moves on, showing what is being done now; does nothing when quiet."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def to(self, done: float, label: str, total: float | None = None) -> None:
        """`done` of `total` (the total given at the start, unless given here), doing `label`."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total, description=label)


@contextmanager
def steps(title: str, total: float | None, *, quiet: bool) -> Iterator[Steps]:
    if quiet or not sys.stderr.isatty():
        yield Steps(None, None)
        return
    columns = (TextColumn(f"{title} [bold]{{task.description}}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Steps(progress, progress.add_task("", total=total))
