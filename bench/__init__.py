"""Benchmarks: `python -m bench` runs them, `python -m bench.report` writes docs/benchmarks.md."""

from pathlib import Path

RESULTS = Path(__file__).parent / "results"
