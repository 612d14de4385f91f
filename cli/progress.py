"""A rich progress bar on stderr (count, rate, ETA), fed by the engine's progress callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _counters(stats: dict[str, int]) -> str:
    shown = {name: stats.get(name, 0) for name in ("tokens", "retries", "rejects")}
    return "  ".join(f"{value:,} {name}" for name, value in shown.items() if value)


class _Update:
    """The engine's `(done, total)` callback; `show_stats` adds a backend's running counters (tokens,
    retries, rejects) to the bar once the backend exists."""

    def __init__(self, bar, task, unit: str) -> None:
        self._bar, self._task, self._unit = bar, task, unit
        self._stats: Callable[[], dict] | None = None

    def show_stats(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def __call__(self, done: int, total: int) -> None:
        self._bar.update(self._task, completed=done, total=total, counters=_counters(self._stats()) if self._stats else "")
        speed = self._bar.tasks[self._task].finished_speed or self._bar.tasks[self._task].speed
        if speed:
            self._bar.update(self._task, rate=f"{speed:,.0f} {self._unit}/s")


@contextmanager
def progress_bar(description: str, unit: str = "docs") -> Iterator[_Update]:
    """Yields the progress callback; the bar goes to stderr so stdout stays clean for pipes."""
    # imported here: rich costs 45 ms, and a query printing JSON should not pay it
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.data.speed]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counters]}"),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        yield _Update(bar, bar.add_task(description, total=None, counters="", rate=f"- {unit}/s"), unit)
