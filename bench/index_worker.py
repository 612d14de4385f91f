"""One index type on one prepared vector set, in a process of its own so that its peak RSS is its own.
Prints one JSON object. Usage: python -m bench.index_worker DIR KIND STORAGE"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from xlsearch.engine.ann.faiss_index import build_faiss_index, per_query_recall, search
from xlsearch.engine.ann.index_types import plan_for

K = 10


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 3)


def measure(data: Path, kind: str, storage: str, single_queries: int) -> dict:
    base = np.load(data / "base.npy")
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    plan = plan_for(kind, len(base), base.shape[1], storage)
    started = time.perf_counter()
    built = build_faiss_index(plan, base)
    build_s = time.perf_counter() - started
    index, tuning = built.index, built.tuning
    with tempfile.TemporaryDirectory() as scratch:
        faiss.write_index(index, f"{scratch}/index.faiss")
        size = Path(f"{scratch}/index.faiss").stat().st_size
    def stored(rows: np.ndarray) -> np.ndarray:  # the exact vectors a lossy index re-scores with
        return base[rows]

    latencies = []
    for query in queries[:single_queries]:
        began = time.perf_counter()
        search(index, query[None, :], K, tuning["params"], exact_vectors=stored)
        latencies.append(time.perf_counter() - began)
    began = time.perf_counter()
    _, found = search(index, queries, K, tuning["params"], exact_vectors=stored)
    batch_s = time.perf_counter() - began
    recall = float(per_query_recall(found, truth).mean())
    result = {
        "count": len(base), "dim": base.shape[1], "kind": kind, "storage": storage, "key": plan.key,
        "device": built.device, "build_s": round(build_s, 2), "params": tuning["params"],
        "tuned_recall@10": tuning["recall@10"], "tuning": "bisected", "recall@10": round(recall, 4),
        "index_mb": round(size / 2**20, 1), "estimated_mb": round(plan.estimated_bytes / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99),
        "batch_qps": round(len(queries) / batch_s, 1),
    }
    if kind == "flat" and storage == "float32":
        # the bound: a plain matrix-vector product over the same vectors, the same queries
        spent = []
        for query in queries[:single_queries]:
            began = time.perf_counter()
            np.argpartition(base @ query, -K)[-K:]
            spent.append(time.perf_counter() - began)
        result["matvec_p50_ms"] = percentile_ms(spent, 50)
        result["matvec_gb_s"] = round(base.nbytes / np.percentile(spent, 50) / 1e9, 2)
        result["flat_gb_s"] = round(base.nbytes / np.percentile(latencies, 50) / 1e9, 2)
    return result


if __name__ == "__main__":
    directory, kind, storage = sys.argv[1], sys.argv[2], sys.argv[3]
    single = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    print(json.dumps(measure(Path(directory), kind, storage, single)))
