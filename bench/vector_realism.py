"""Which synthetic vectors behave like real embeddings under nearest-neighbour search? The 1M benchmark
cannot use real vectors (embedding a million sentences would take four hours here), so its generator is
chosen by this comparison at a size where real vectors exist: real local-model embeddings of Tatoeba
sentences (every language) against as many vectors drawn from mixtures fitted to them
(bench.realistic_vectors.FittedMixture; one component is the plain fitted Gaussian).

For each set: held-out queries (real sentences left out of the fit and of the base, or fresh draws),
exact top 10, then recall@10 and single-query p50 of HNSW32 per efSearch and of IVF-Flat per nprobe,
and the median cosine of a query's 1st and 10th neighbours and of a random document."""

from __future__ import annotations

import time

import faiss
import numpy as np

from bench.realistic_vectors import FittedMixture, held_out
from xlsearch.engine.ann.faiss_index import per_query_recall

QUERIES = 1000
EF_SEARCH = (16, 32, 64, 128, 256, 512)
NPROBE = (4, 8, 16, 32, 64, 128, 256)
K = 10
TIMED_QUERIES = 200


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return round(float(per_query_recall(found, truth).mean()), 4)


def curve(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, name: str, values: tuple[int, ...]) -> list[dict]:
    """recall@10 and single-query p50 at each value of the search-depth parameter `name`."""
    points = []
    for value in values:
        parameters = faiss.SearchParametersHNSW(efSearch=value) if name == "efSearch" else faiss.SearchParametersIVF(nprobe=value)
        found = index.search(queries, K, params=parameters)[1]
        spent = []
        for query in queries[:TIMED_QUERIES]:
            began = time.perf_counter()
            index.search(query[None, :], K, params=parameters)
            spent.append(time.perf_counter() - began)
        points.append({name: value, "recall@10": recall(found, truth), "p50_ms": round(float(np.median(spent)) * 1000, 3)})
    return points


def describe(name: str, base: np.ndarray, queries: np.ndarray, seed: int = 0) -> dict:
    started = time.perf_counter()
    cosines, truth = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    random_docs = base[rng.integers(0, len(base), len(queries))]
    hnsw = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(base)
    lists = int(4 * np.sqrt(len(base)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base[rng.choice(len(base), min(len(base), 64 * lists), replace=False)])
    ivf.add(base)
    return {
        "set": name, "count": len(base), "dim": base.shape[1],
        "cosine_1st": round(float(np.median(cosines[:, 0])), 4), "cosine_10th": round(float(np.median(cosines[:, -1])), 4),
        "cosine_random": round(float(np.median(np.einsum("qd,qd->q", queries, random_docs))), 4),
        "hnsw32": curve(hnsw, queries, truth, "efSearch", EF_SEARCH),
        f"ivf{lists}": curve(ivf, queries, truth, "nprobe", NPROBE),
        "seconds": round(time.perf_counter() - started, 1),
    }


def curves(row: dict) -> list[tuple[str, str]]:
    """(key, depth parameter) of each curve in a row."""
    return [(key, "efSearch" if key.startswith("hnsw") else "nprobe") for key in row if key.startswith(("hnsw", "ivf"))]


def run(real: np.ndarray, components: tuple[int, ...], progress=print) -> list[dict]:
    """`real` split into held-out queries and a base; each generator is fitted on the base only."""
    base, queries = held_out(real, QUERIES)
    rows = [describe("real", base, queries)]
    progress(rows[-1])
    for count in components:
        mixture = FittedMixture(base, components=count)
        rows.append(describe(f"mixture of {count}" if count > 1 else "one Gaussian", mixture.draw(len(base)), mixture.draw(len(queries))))
        progress(rows[-1])
    return rows
