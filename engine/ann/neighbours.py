"""Exact nearest neighbours by inner product: of queries among stored rows (exact_search), and of every row
among the rows of other groups (exact_neighbours: margin ranking's document neighbourhoods, dedup's
pairs), on the GPU when resolve_device chose it.

On the GPU, faiss's brute-force k-NN (knn_gpu): the rows stay in host memory, and faiss moves them through
the GPU in shards when they exceed VECTORS_SHARE of its memory (the queries in blocks likewise), merging
the shards' results on the host. With `half`, the matrix products read fp16 rows and accumulate in fp32:
half the memory. Measured by `python -m bench.gpu` on an H200 (1M x 384, k=5, faiss-gpu 1.15.1 through
shared/gpu-kit's cuBLAS forwarding): fp32 22.96 s, fp16 34.87 s, with 99.72% of fp16's neighbours the
fp32 ones and no row's mean cosine moved by more than 7e-5. fp16 was slower there, so both functions
default to fp32; `half` is for vectors that would not fit the GPU's memory otherwise.

faiss selects at most GPU_MAX_K neighbours on the GPU. A deeper search (the rows of a document with more
than GPU_MAX_K - k chunks, whose own chunks must be looked past) runs on the CPU (faiss.knn, any k), for
those rows only.

On the CPU: faiss.knn, blocked matrix products. Exact, and quadratic: the neighbourhoods of 1M x 384 rows
take about an hour on 16 cores, which is why the index writer takes the CPU's from the tuned index."""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

from xlsearch.engine.ann.gpu import gpu_resources, probe_gpu

GPU_MAX_K = 2048  # faiss's GPU k-selection limit (GPU_MAX_SELECTION_K in faiss/gpu/utils/DeviceDefs.cuh)
# Of the GPU's memory, the most that the rows, and the queries with their results, each take at once:
# faiss's distance tiles and scratch memory need the rest.
VECTORS_SHARE, QUERIES_SHARE = 0.4, 0.2
# (row, candidate) pairs found per call: 2**24 are 200 MB of scores and ids, whatever the search depth.
BLOCK_RESULTS = 1 << 24

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def exact_search(queries: np.ndarray, base: np.ndarray, k: int, device: str = "cpu",
                 half: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best rows of `base` (fewer when base has fewer), best first: (scores, rows)."""
    return _searcher(base, device, half)(queries, k)


def exact_neighbours(vectors: np.ndarray, k: int, device: str = "cpu", groups: np.ndarray | None = None,
                     half: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows among those of other groups, best first, as (scores, rows), -inf and -1
    where fewer exist. `groups` labels each row (a document's chunks overlap it and must not count as its
    neighbours); None: each row is its own group, so only itself is skipped. `half` applies on the GPU.

    A row's search goes as deep as k plus its own group's size, so that k others remain whatever its group
    holds; rows whose depths round up to the same power of two are searched together."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count = len(vectors)
    codes = np.arange(count) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    depths = np.minimum(k + np.bincount(codes)[codes], count) if count else np.zeros(0, np.int64)
    widths = np.left_shift(1, np.ceil(np.log2(np.maximum(depths, 1))).astype(np.int64))
    search = _searcher(vectors, device, half)
    scores = np.full((count, k), -np.inf, dtype=np.float32)
    rows = np.full((count, k), -1, dtype=np.int64)
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        step = max(1, BLOCK_RESULTS // int(width))
        for start in range(0, len(members), step):
            block = members[start:start + step]
            found = search(vectors[block], int(depths[block].max()))
            scores[block], rows[block] = nearest_of_other_groups(*found, codes[block], codes, k)
    return scores, rows


def nearest_of_other_groups(scores: np.ndarray, rows: np.ndarray, query_groups: np.ndarray, groups: np.ndarray,
                            k: int) -> tuple[np.ndarray, np.ndarray]:
    """Of each query's candidates (best first, rows -1 where none), the first k that belong to another
    group than the query's own, as (scores, rows) with -inf and -1 where fewer are left."""
    other = (rows >= 0) & (groups[np.maximum(rows, 0)] != query_groups[:, None])
    order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # other groups' candidates first, in score order
    kept = np.take_along_axis(other, order, axis=1)
    width = order.shape[1]
    best_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(rows), k), -1, dtype=np.int64)
    best_scores[:, :width] = np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf)
    best_rows[:, :width] = np.where(kept, np.take_along_axis(rows, order, axis=1), -1)
    return best_scores, best_rows


def _searcher(base: np.ndarray, device: str, half: bool) -> Search:
    """search(queries, k) over `base`: on the GPU up to GPU_MAX_K (base converted to fp16 once, with
    `half`), on the CPU beyond that and on a CPU device."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    on_gpu = device == "gpu"
    kind = np.float16 if half and on_gpu else np.float32
    stored = base.astype(kind, copy=False)
    memory = (probe_gpu().memory or 0) if on_gpu else 0  # 0: faiss moves everything at once

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(base))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        if not on_gpu or k > GPU_MAX_K:
            return faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
        return faiss.knn_gpu(gpu_resources(), queries.astype(kind, copy=False), stored, k,
                             metric=faiss.METRIC_INNER_PRODUCT, device=0,
                             vectorsMemoryLimit=int(memory * VECTORS_SHARE), queriesMemoryLimit=int(memory * QUERIES_SHARE))

    return search
