"""Benchmarks: `python -m bench` runs them, `python -m bench.report` writes docs/benchmarks.md."""

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def stage_seconds(ends: dict[str, float]) -> dict[str, float]:
    """Each stage's seconds from when each last reported progress (seconds since the start): a stage runs
    from the end of the one before to its own last report."""
    stages, previous = {}, 0.0
    for end, stage in sorted((end, stage) for stage, end in ends.items()):
        stages[stage] = round(end - previous, 1)
        previous = end
    return stages
