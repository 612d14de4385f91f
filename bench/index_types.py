"""Index types at scale on realistic vectors (bench.realistic_vectors): build time, peak RSS, size,
recall@10 against exact search on held-out queries, single-query p50/p99 and batch QPS, each type in
its own process (bench.index_worker). Also what `auto` picks for each size."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np

from bench import RESULTS
from bench.realistic_vectors import FittedMixture
from engine.index_types import choose_plan

QUERIES = 1000
# (count, dim, [(kind, storage), ...])
FULL = [
    (100_000, 384, [("flat", "float32"), ("flat", "sq8"), ("hnsw", "float32"), ("hnsw", "sq8"), ("ivf", "float32"),
                    ("ivf", "sq8"), ("ivfpq", "float32")]),
    (1_000_000, 384, [("flat", "float32"), ("hnsw", "float32"), ("ivf", "sq8"), ("ivfpq", "float32")]),
    (100_000, 2560, [("flat", "float32"), ("flat", "float16"), ("hnsw", "float32"), ("ivf", "sq8"), ("ivfpq", "float32")]),
]
QUICK = [(5_000, 64, [("flat", "float32"), ("hnsw", "float32"), ("ivf", "sq8"), ("ivfpq", "float32")])]


def prepare(directory: Path, gaussian: FittedMixture, count: int) -> None:
    base = gaussian.draw(count)
    queries = gaussian.draw(QUERIES)  # held out: never in the index
    np.save(directory / "base.npy", base)
    np.save(directory / "queries.npy", queries)
    np.save(directory / "truth.npy", faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[1])


def run(sample: np.ndarray, quick: bool, progress=print) -> list[dict]:
    rows = []
    for count, dim, kinds in QUICK if quick else FULL:
        gaussian = FittedMixture(sample if dim >= sample.shape[1] else sample[:, :dim], dim=dim)
        auto = choose_plan("auto", count, dim).key
        with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
            prepare(Path(scratch), gaussian, count)
            for kind, storage in kinds:
                single = 50 if kind == "flat" and count * dim > 50_000_000 else 200
                done = subprocess.run([sys.executable, "-m", "bench.index_worker", scratch, kind, storage, str(single)],
                                      capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["auto_picks"] = auto
                progress(row)
                rows.append(row)
    return rows
