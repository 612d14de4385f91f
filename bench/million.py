"""HNSW32 at 1M x 384, the index `auto` picks there, on the two mixtures that bracket real embeddings in
bench.vector_realism: 256 components (at 100k, the efSearch it needs for recall@10 0.95 is what the real
vectors need) and 64 (it needs more than the real vectors: the conservative one). Each is built as
`xlsearch index` builds it (held-out tuning included); then recall@10 on 1,000 fresh queries and
single-query p50 per efSearch, the tuned one among them."""

from __future__ import annotations

import time

import faiss
import numpy as np

from bench.realistic_vectors import FittedMixture
from bench.vector_realism import K, QUERIES, curve
from xlsearch.engine.ann.faiss_index import build_faiss_index
from xlsearch.engine.ann.index_types import plan_for

COUNT = 1_000_000
EF_SEARCH = (64, 96, 128, 160, 192, 256, 384, 512)
GENERATORS = (256, 64)


def run(real: np.ndarray, count: int = COUNT, generators: tuple[int, ...] = GENERATORS, progress=print) -> list[dict]:
    rows = []
    for components in generators:
        mixture = FittedMixture(real, components)
        base, queries = mixture.draw(count), mixture.draw(QUERIES)
        truth = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
        started = time.perf_counter()
        built = build_faiss_index(plan_for("hnsw", count, base.shape[1]), base)
        build_s = time.perf_counter() - started
        tuned = built.tuning["params"]["efSearch"]
        points = curve(built.index, queries, truth, "efSearch", tuple(sorted({*EF_SEARCH, tuned})))
        rows.append({"set": f"mixture of {components}", "count": count, "dim": base.shape[1], "build_s": round(build_s, 1),
                     "tuned_efSearch": tuned, "tuned_recall@10": built.tuning["recall@10"], "hnsw32": points})
        progress(rows[-1])
        del built, base
    return rows
