"""Index types at scale: build time, peak RSS, size, recall@10 against exact search on held-out queries,
single-query p50/p99 and batch QPS, each type in its own process (bench.index_worker). Also what `auto`
picks for each size. The 100k x 384 set is real embeddings (bench.realistic_vectors.real_vectors); the
larger ones are drawn from the mixture fitted to them (bench.vector_realism shows why that one)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np

from bench import RESULTS
from bench.realistic_vectors import MIXTURE_COMPONENTS, FittedMixture, held_out
from xlsearch.engine.ann.index_types import choose_plan

REAL = None  # the size of a "real" set: as many vectors as were embedded, less the queries
QUERIES = 1000
# (count, dim, source, [(kind, storage), ...]); source "real": the embedded sentences themselves, less the
# held-out queries; "fitted": drawn from the mixture fitted to them
FULL = [
    (REAL, 384, "real", [("flat", "float32"), ("flat", "sq8"), ("hnsw", "float32"), ("hnsw", "sq8"), ("ivf", "float32"),
                         ("ivf", "sq8"), ("ivfpq", "float32")]),
    (1_000_000, 384, "fitted", [("flat", "float32"), ("hnsw", "float32"), ("hnsw", "sq8"), ("ivf", "sq8"), ("ivfpq", "float32")]),
    (100_000, 2560, "fitted", [("flat", "float32"), ("flat", "float16"), ("hnsw", "float32"), ("ivf", "sq8"), ("ivfpq", "float32")]),
]
QUICK = [(REAL, 384, "real", [("flat", "float32"), ("hnsw", "float32"), ("ivf", "sq8"), ("ivfpq", "float32")]),
         (3_000, 64, "fitted", [("hnsw", "float32")])]


def vector_sets(real: np.ndarray, count: int | None, dim: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(base, held-out queries) of `count` x `dim` (REAL: all the real vectors but the queries)."""
    if source == "real":
        return held_out(real, QUERIES)
    mixture = FittedMixture(real if dim >= real.shape[1] else real[:, :dim], MIXTURE_COMPONENTS, dim=dim)
    return mixture.draw(count), mixture.draw(QUERIES)


def prepare(directory: Path, base: np.ndarray, queries: np.ndarray) -> None:
    np.save(directory / "base.npy", base)
    np.save(directory / "queries.npy", queries)
    np.save(directory / "truth.npy", faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[1])


def run(real: np.ndarray, quick: bool, progress=print) -> list[dict]:
    rows = []
    for count, dim, source, kinds in QUICK if quick else FULL:
        base, queries = vector_sets(real, count, dim, source)
        auto = choose_plan("auto", len(base), dim).key
        single = 50 if base.size > 50_000_000 else 200  # single-query timings of an exact scan of large sets take long
        with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
            prepare(Path(scratch), base, queries)
            del base, queries
            for kind, storage in kinds:
                done = subprocess.run([sys.executable, "-m", "bench.index_worker", scratch, kind, storage,
                                       str(single if kind == "flat" else 200)],
                                      capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["source"], row["auto_picks"] = source, auto
                progress(row)
                rows.append(row)
    return rows
