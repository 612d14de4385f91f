"""Benchmarks: `python -m bench` runs them, `python -m bench.report` writes docs/benchmarks.md."""

import os
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# Tatoeba's test pairs: beside the checkout (CI's layout), or where XLSEARCH_TATOEBA says (a clone elsewhere).
# The tests' fixture reads the same path, so a test never runs a benchmark that finds no data.
TATOEBA = Path(os.environ.get("XLSEARCH_TATOEBA", Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tatoeba"))


def tatoeba_files(pattern: str = "tatoeba.*-eng.*") -> list[Path]:
    """The Tatoeba files matching `pattern`, sorted; none stops the benchmark with one line saying where it
    looked (an empty set would otherwise fail deep in FAISS or give rates of nothing)."""
    files = sorted(TATOEBA.glob(pattern))
    if not files:
        raise SystemExit(f"no Tatoeba test pairs ({pattern}) at {TATOEBA}: set XLSEARCH_TATOEBA to their directory")
    return files


def stage_seconds(ends: dict[str, float]) -> dict[str, float]:
    """Each stage's seconds from when each last reported progress (seconds since the start): a stage runs
    from the end of the one before to its own last report."""
    stages, previous = {}, 0.0
    for end, stage in sorted((end, stage) for stage, end in ends.items()):
        stages[stage] = round(end - previous, 1)
        previous = end
    return stages
