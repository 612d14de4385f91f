"""A rich progress bar on stderr (count, rate, ETA), fed by the engine's progress callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _counters(stats: dict[str, int]) -> str:
    shown = {name: stats.get(name, 0) for name in ("tokens", "retries", "rejects")}
    return "  ".join(f"{value:,} {name}" for name, value in shown.items() if value)


@contextmanager
def progress_bar(description: str, unit: str = "docs", stats: Callable[[], dict] | None = None) -> Iterator:
    """Yields a callback `(done, total)`; the bar goes to stderr so stdout stays clean for pipes.
    `stats` adds the backend's running counters (tokens, retries, rejects) when they are not zero."""
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
        task = bar.add_task(description, total=None, counters="", rate=f"- {unit}/s")

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, counters=_counters(stats()) if stats else "")
            speed = bar.tasks[task].finished_speed or bar.tasks[task].speed
            if speed:
                bar.update(task, rate=f"{speed:,.0f} {unit}/s")

        yield update
