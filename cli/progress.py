"""A rich progress bar on stderr (count, rate, ETA), fed by the engine's progress callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def counters(stats: dict[str, int]) -> str:
    """A backend's running counters as the bar shows them; while no server takes work, how long the job
    has waited for one."""
    shown = {name: stats.get(name, 0) for name in ("tokens", "retries", "rejects")}
    line = "  ".join(f"{value:,} {name}" for name, value in shown.items() if value)
    waiting = stats.get("waiting_s", 0)
    return f"{line}  waiting {waiting:,} s for a server".strip() if waiting else line


class _Update:
    """The engine's `(done, total)` callback; `show_stats` adds a backend's running counters (tokens,
    retries, rejects, a wait for a server) to the bar once the backend exists. They are read at every
    refresh of the bar, so a wait shows while it lasts, between two windows of documents."""

    def __init__(self, unit: str) -> None:
        self._unit = unit
        self._bar = self._task = None  # the bar, once it runs
        self.stats: Callable[[], dict] | None = None

    def show_stats(self, stats: Callable[[], dict]) -> None:
        self.stats = stats

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        """`stage`: what the rows are going through now, for work of several passes (an out-of-core build)."""
        self._bar.update(self._task, completed=done, total=total, **({"description": stage} if stage else {}))
        speed = self._bar.tasks[self._task].finished_speed or self._bar.tasks[self._task].speed
        if speed:
            self._bar.update(self._task, rate=f"{speed:,.0f} {self._unit}/s")


@contextmanager
def progress_bar(description: str, unit: str = "docs") -> Iterator[_Update]:
    """Yields the progress callback; the bar goes to stderr so stdout stays clean for pipes."""
    # imported here: rich costs 45 ms, and a query printing JSON should not pay it
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    update = _Update(unit)  # before the bar: its columns are drawn from the moment it starts

    class Counters(ProgressColumn):
        def render(self, task) -> Text:
            return Text(counters(update.stats()) if update.stats else "")

    console = Console(stderr=True)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.data.speed]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        Counters(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        update._bar, update._task = bar, bar.add_task(description, total=None, rate=f"- {unit}/s")
        yield update
