"""A rich progress bar on stderr (count, rate, ETA), fed by the engine's progress callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def _counters(stats: dict[str, int]) -> str:
    shown = {name: stats.get(name, 0) for name in ("tokens", "retries", "rejects")}
    return "  ".join(f"{value:,} {name}" for name, value in shown.items() if value)


@contextmanager
def progress_bar(description: str, unit: str = "docs", stats: Callable[[], dict] | None = None) -> Iterator:
    """Yields a callback `(done, total)`; the bar goes to stderr so stdout stays clean for pipes.
    `stats` adds the backend's running counters (tokens, retries, rejects) when they are not zero."""
    console = Console(stderr=True)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counters]}"),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None, counters="")

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, counters=_counters(stats()) if stats else "")

        yield update
