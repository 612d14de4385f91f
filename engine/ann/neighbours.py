"""Exact nearest neighbours by inner product: of queries among stored rows (exact_search), and of every row
among the rows of other groups (exact_neighbours: margin ranking's document neighbourhoods, dedup's
pairs), on the GPU when resolve_device chose it.

On the GPU: exact_search is faiss's brute-force k-NN (knn_gpu), the rows in host memory, moved through the
GPU in shards when they exceed VECTORS_SHARE of its memory (the queries in blocks likewise).
exact_neighbours holds the rows on the GPU (a flat index), as many at a time as fit VECTORS_SHARE of its
memory, and searches them with every row; exact_neighbours_streamed does the same for rows read a segment
at a time (an out-of-core index's), so both give the same neighbourhoods for the same rows. With `half`,
the matrix products read fp16 rows and accumulate in fp32: half the memory. Measured by `python -m
bench.gpu` on an H200 (1M x 384, k=5, faiss-gpu 1.15.1 through shared/gpu-kit's cuBLAS forwarding, knn_gpu
then): fp32 22.96 s, fp16 34.87 s, with 99.72% of fp16's neighbours the fp32 ones and no row's mean
cosine moved by more than 7e-5. fp16 was slower there, so both functions default to fp32; `half` is for
vectors that would not fit the GPU's memory otherwise.

faiss selects at most GPU_MAX_K neighbours on the GPU. A deeper search (the rows of a document with more
than GPU_MAX_K - k chunks, whose own chunks must be looked past) runs on the CPU (faiss.knn, any k), for
those rows only.

On the CPU: faiss.knn, blocked matrix products. Exact, and quadratic: the neighbourhoods of 1M x 384 rows
take about an hour on 16 cores, which is why the index writer takes the CPU's through the index, at the
depth faiss_index.neighbourhood_tuning finds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

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
Segments = Callable[[], Iterable[tuple[int, np.ndarray]]]  # (first row, vectors) of each segment, in order


def exact_search(queries: np.ndarray, base: np.ndarray, k: int, device: str = "cpu",
                 half: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best rows of `base` (fewer when base has fewer), best first: (scores, rows)."""
    return _searcher(base, device, half)(queries, k)


def exact_neighbours(vectors: np.ndarray, k: int, device: str = "cpu", groups: np.ndarray | None = None,
                     half: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows among those of other groups, best first, as (scores, rows), -inf and -1
    where fewer exist. `groups` labels each row (a document's chunks overlap it and must not count as its
    neighbours); None: each row is its own group, so only itself is skipped. `half` applies on the GPU.
    The rows held in memory: exact_neighbours_streamed with them as its one segment."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    codes = np.arange(len(vectors)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    return exact_neighbours_streamed(lambda: iter([(0, vectors)]), codes, k, device, half)


def exact_neighbours_streamed(segments: Segments, groups: np.ndarray, k: int, device: str = "cpu", half: bool = False,
                              base_rows: int | None = None,
                              progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """exact_neighbours of rows that need not fit in memory: `segments()` yields them in order, a segment
    at a time, as (first row, vectors), from the first each time it is called; `groups` numbers each
    row's group (0..); memory holds a segment or two and the (rows, k) results.

    The rows are searched a base at a time, and each base's candidates of other groups are merged into
    what the bases before found: a row's own group is left out base by base, so the merge is the whole's
    answer. A row's search in a base goes as deep as k plus its own group's size, so that k others remain
    whatever its group holds; rows whose depths round up to the same power of two are searched together.
    - On the GPU: a base is as many consecutive rows as fit VECTORS_SHARE of its memory (or `base_rows`),
      held on the GPU by a flat index (fp16 with `half`), searched by every segment in turn; one base
      holds 20M x 384 rows on an H100 (fp32). `progress(rows, total)` after each segment of each base.
    - On the CPU, and for the rows deeper than GPU_MAX_K: each segment is a base for the segments that
      hold such rows (on a CPU device, all of them: quadratic, for rows that fit in memory)."""
    count = len(groups)
    depths = np.minimum(k + np.bincount(groups)[groups], count) if count else np.zeros(0, np.int64)
    scores = np.full((count, k), -np.inf, dtype=np.float32)
    rows = np.full((count, k), -1, dtype=np.int64)
    best = _Best(scores, rows, groups, depths, k)
    on_gpu = device == "gpu"
    deep = depths > GPU_MAX_K if on_gpu else np.ones(count, bool)
    if on_gpu and not deep.all():
        for base_first, base in _gpu_bases(segments, base_rows, half):
            for first, queries in segments():
                at = first + np.flatnonzero(~deep[first:first + len(queries)])
                best.searched(base.search, base_first, base.ntotal, queries[at - first], at)
                if progress:
                    progress(first + len(queries), count)
    for first, queries in segments():
        at = first + np.flatnonzero(deep[first:first + len(queries)])
        if len(at):
            for base_first, base in segments():
                best.searched(_cpu_search(base), base_first, len(base), queries[at - first], at)
    return scores, rows


class _Best:
    """The (rows, k) results so far, and a base's candidates merged into them."""

    def __init__(self, scores: np.ndarray, rows: np.ndarray, groups: np.ndarray, depths: np.ndarray, k: int) -> None:
        self.scores, self.rows, self.groups, self.depths, self.k = scores, rows, groups, depths, k

    def searched(self, search: Search, base_first: int, base_count: int, queries: np.ndarray, at: np.ndarray) -> None:
        """Rows `at` (their vectors: `queries`) searched in a base of `base_count` rows from `base_first`."""
        depths = np.minimum(self.depths[at], base_count)
        widths = np.left_shift(1, np.ceil(np.log2(np.maximum(depths, 1))).astype(np.int64))
        for width in np.unique(widths):
            members = np.flatnonzero(widths == width)
            step = max(1, BLOCK_RESULTS // int(width))
            for start in range(0, len(members), step):
                block = members[start:start + step]
                found_scores, found_rows = search(np.ascontiguousarray(queries[block]), int(depths[block].max()))
                found_rows = np.where(found_rows >= 0, found_rows + base_first, -1)
                self._merged(at[block], *nearest_of_other_groups(found_scores, found_rows, self.groups[at[block]],
                                                                 self.groups, self.k))

    def _merged(self, at: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> None:
        both_scores, both_rows = np.hstack([self.scores[at], scores]), np.hstack([self.rows[at], rows])
        order = np.argsort(-both_scores, axis=1, kind="stable")[:, :self.k]  # ties: the earlier base first
        self.scores[at] = np.take_along_axis(both_scores, order, axis=1)
        self.rows[at] = np.take_along_axis(both_rows, order, axis=1)


def _cpu_search(base: np.ndarray) -> Search:
    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn(queries, np.ascontiguousarray(base, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)

    return search


def _gpu_bases(segments: Segments, base_rows: int | None, half: bool) -> Iterator[tuple[int, faiss.Index]]:
    """(first row, flat index on GPU 0) of consecutive rows, at most `base_rows` (by default what fits
    VECTORS_SHARE of the GPU's memory) at a time; a base's GPU memory is freed before the next is filled."""
    config = faiss.GpuIndexFlatConfig()
    config.device, config.useFloat16 = 0, half
    base, base_first = None, 0
    for first, vectors in segments():
        if base_rows is None:
            base_rows = max(1, int((probe_gpu().memory or 0) * VECTORS_SHARE) // (vectors.shape[1] * (2 if half else 4)))
        start = 0
        while start < len(vectors):
            if base is None:
                base, base_first = faiss.GpuIndexFlatIP(gpu_resources(), vectors.shape[1], config), first + start
            part = np.ascontiguousarray(vectors[start:start + base_rows - base.ntotal], dtype=np.float32)
            base.add(part)
            start += len(part)
            if base.ntotal == base_rows:
                yield base_first, base
                base.reset()
                base = None
    if base is not None:
        yield base_first, base


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
