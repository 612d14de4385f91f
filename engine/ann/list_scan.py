"""An inverted file searched for many queries at once, list by list: the neighbourhood step asks every row
of the index for its nearest rows, millions of queries at the depth tuned for them.

FAISS scans a list once for each query that probes it, scoring one code at a time. Here each list is read
once per batch and scored against every query of the batch that probes it as one matrix product (BLAS),
the codes' decoding folded into the queries: a scalar-quantized component is vmin + (code + 0.5) / levels
x vdiff, so q . x is a constant of q plus (q * vdiff / levels) . code, and the constant rides in the
product as a last column (ones on the codes' side). Only the queries with a score above the worst of
their k so far go on to FAISS's heaps. The candidates and scores are IndexIVF.search's (with the coarse
distance as q . centroid where codes are residuals, as FAISS's scanners take it), within float rounding:
3e-7 at most, the same 90 candidates for each of 300 queries, on the 5M index below.

Measured on this project's 2-core VM, 5M x 384 IVF7281,SQ8 on disk, 10,000 of its rows: nprobe 144 (90
candidates): 1,738 rows/s, IndexIVF.search about 600 (2 threads); nprobe 384 (9 candidates): 860 rows/s,
IndexIVF.search 129 on one thread. The matrix product is most of it, at about 200 GFLOPS, the most BLAS
gives there. FAISS's own threads are held to one while the lists are scanned: its heap updates and
OpenBLAS's threads spun against each other (the same 10,000 queries took 24.3 s with both, 5.8 s
without). That setting is the calling thread's (OpenMP's), so other threads' searches keep theirs.

The lists are shared out among threads, one a core, each with BLAS on one thread and heaps of its own,
merged at the end: a third of the scan is not the product (gathering each list's queries, decoding its
codes, keeping the best), and one thread left it to one core. On the same 5M index (on a slower 2-core
host, the products at about 100 GFLOPS), 10,000 rows at nprobe 384: 31.5 s on one thread (products 21.0 s,
finding which queries beat their worst 3.3, gathering queries 2.7, decoding 1.4, the coarse search 1.0,
heaps 1.0), 23.3-25.3 s on two. While a scan runs, BLAS keeps one thread in every thread of the process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

# Below this many queries a batch is IndexIVF.search's: a scan reads every list its queries probe, a cost
# each batch pays whatever its size. Measured on this project's 2-core VM, rows a second, scan / FAISS
# (2 threads, rows of the index as queries, 9 best): 100k IVF227,SQ8 at nprobe 32: 799 / 854 at 64
# queries a call, 1,437 / 970 at 128, 2,420 / 1,062 at 256, 4,835 / 1,054 at 1,024 (90 best: 2,371 /
# 1,033 at 256); 5M IVF7281,SQ8 at nprobe 384: 77 / 52 at 128, 126 / 51 at 256, 263 / 58 at 1,024.
LIST_SCAN_QUERIES = 256
# Scores of one product at most (4 MB): the queries probing a long list are scored a block at a time. The
# lists of an index are uneven, and the long ones are probed by the most queries: scoring them at once took
# a scan of 10,000 queries on 1M rows' IVF910,SQ4 from 28 MB (its arrays) to 60 MB (tracemalloc's peak).
PRODUCT_SCORES = 1 << 20

_QUANTIZER = faiss.ScalarQuantizer
_LEVELS = {_QUANTIZER.QT_8bit: 255.0, _QUANTIZER.QT_8bit_uniform: 255.0,
           _QUANTIZER.QT_4bit: 15.0, _QUANTIZER.QT_4bit_uniform: 15.0}
_HALF = (_QUANTIZER.QT_fp16,)


def scan_workers() -> int:
    """Threads a scan splits its lists among: one for each core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def scan_batch(budget: int, dim: int, k: int, nprobe: int, workers: int | None = None) -> int:
    """How many queries one scan_lists call takes within `budget` bytes: each query's scaled copy
    (4 (dim + 1) bytes), its k best in each of `workers` threads (12 k each) and its (query, list) pairs
    (24 nprobe), beside the products' scores and the part of them kept (8 MB, shared out among the threads)."""
    workers = workers or scan_workers()
    return max(0, (budget - 8 * PRODUCT_SCORES) // (4 * (dim + 1) + 12 * k * workers + 24 * nprobe))


def scannable(index: faiss.Index) -> faiss.IndexIVF | None:
    """`index` as the inverted file scan_lists reads (flat, fp16, 8- or 4-bit scalar codes, inner
    product), or None: product quantisation, wrapped or other indexes are IndexIVF.search's."""
    ivf = faiss.downcast_index(index)
    if ivf.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    if isinstance(ivf, faiss.IndexIVFFlat):
        return ivf
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer) and (ivf.sq.qtype in _LEVELS or ivf.sq.qtype in _HALF):
        return ivf
    return None


def scan_lists(ivf: faiss.IndexIVF, queries: np.ndarray, k: int, nprobe: int,
               workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best rows among the `nprobe` lists nearest it, best first: (scores, rows), as
    IndexIVF.search gives them (-3.4e38 and -1 where fewer are in reach). `ivf`: scannable's. The lists
    are shared out among `workers` threads (scan_workers() by default), each with its own heaps."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nprobe = max(1, min(int(nprobe), ivf.nlist))
    coarse, probed = ivf.quantizer.search(queries, nprobe)
    # (query, list) pairs grouped by list: each list's queries are a slice of `by_list`
    by_list = np.argsort(probed.ravel(), kind="stable")
    bounds = np.searchsorted(probed.ravel(), np.arange(ivf.nlist + 1), sorter=by_list)
    coarse = coarse.ravel()[by_list] if ivf.by_residual else None
    del probed  # memory follows the batch: (queries x nprobe) pairs, 20 bytes each
    sizes = np.array([ivf.invlists.list_size(number) for number in range(ivf.nlist)], dtype=np.int64)
    scan = _Scan(ivf, _Codes(ivf, queries), by_list, bounds, sizes, coarse, nprobe, k, max(1, workers or scan_workers()))
    shares = _shares(np.diff(bounds) * sizes, scan.workers)
    if len(shares) == 1:
        parts = [scan(shares[0])]
    else:
        # imported here: the reader imports this module, and a cold query would pay for these two (7.3 and
        # 1.9 ms measured by -X importtime, the machine busy)
        from concurrent.futures import ThreadPoolExecutor
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(len(shares)) as pool:
            parts = list(pool.map(scan, shares))
    scores, rows = parts[0]
    heaps = _heaps(scores, rows)
    for other_scores, other_rows in parts[1:]:  # still heaps: each thread's best join the first's
        heaps.addn_with_ids(k, faiss.swig_ptr(other_scores), faiss.swig_ptr(other_rows), k, 0, len(queries))
    heaps.reorder()
    return scores, rows


def _shares(work: np.ndarray, workers: int) -> list[np.ndarray]:
    """The lists with work (queries x codes, the products' size) shared among `workers` as evenly as the
    greedy rule gets them: the largest first, each to the least loaded. The same lists, the same shares:
    a scan's results do not depend on which thread finishes first."""
    lists = np.flatnonzero(work)
    if workers == 1 or len(lists) < 2:
        return [lists]
    loads, shares = [0] * workers, [[] for _ in range(workers)]
    for number in lists[np.argsort(-work[lists], kind="stable")]:
        least = loads.index(min(loads))
        shares[least].append(number)
        loads[least] += int(work[number])
    return [np.sort(np.array(share, dtype=np.int64)) for share in shares if share]


@dataclass
class _Scan:
    """One batch's scan of some of its lists into heaps of its own (a thread's share)."""

    ivf: faiss.IndexIVF
    codes: _Codes
    by_list: np.ndarray  # pair numbers (query x nprobe + probe) grouped by list
    bounds: np.ndarray  # list l's pairs: by_list[bounds[l]:bounds[l + 1]]
    sizes: np.ndarray  # codes in each list
    coarse: np.ndarray | None  # each pair's coarse score, in by_list's order, where codes are residuals
    nprobe: int
    k: int
    workers: int

    def __call__(self, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ivf, dim, nprobe, count = self.ivf, self.ivf.d, self.nprobe, len(self.codes.extended)
        scores, rows = np.empty((count, self.k), np.float32), np.empty((count, self.k), np.int64)
        _heaps(scores, rows).heapify()
        widest = int(np.diff(self.bounds)[lists].max()) if len(lists) else 0
        asked = np.empty((widest, dim + 1), np.float32)  # a list's queries, scaled, and their constant
        decoded = np.ones((0, dim + 1), np.float32)
        with _one_faiss_thread():
            for number in lists.tolist():
                size = int(self.sizes[number])
                if len(decoded) < size:
                    decoded = np.ones((size, dim + 1), np.float32)
                listed = self.codes.of_list(number, decoded[:size])
                ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(number), size)
                step = max(1, PRODUCT_SCORES // self.workers // size)
                for first in range(self.bounds[number], self.bounds[number + 1], step):
                    pairs = slice(first, min(first + step, self.bounds[number + 1]))
                    asking = self.by_list[pairs] // nprobe
                    part = asked[:len(asking)]
                    np.take(self.codes.extended, asking, axis=0, out=part)
                    if self.coarse is not None:
                        part[:, dim] += self.coarse[pairs]
                    found = part @ listed.T
                    kept_scores = scores[asking]
                    better = found.max(axis=1) > kept_scores[:, 0]
                    if not better.all():
                        asking, found, kept_scores = asking[better], np.ascontiguousarray(found[better]), kept_scores[better]
                        if not len(asking):
                            continue
                    kept_rows = rows[asking]
                    _heaps(kept_scores, kept_rows).addn_with_ids(size, faiss.swig_ptr(found), faiss.swig_ptr(ids), 0, 0,
                                                                len(asking))
                    scores[asking], rows[asking] = kept_scores, kept_rows
        return scores, rows


class _Codes:
    """The queries as `extended` rows (scaled for the codes, their constant last) and each list's codes as
    float rows ending in 1: the products of the two are the scores, less the coarse distance of residuals."""

    def __init__(self, ivf: faiss.IndexIVF, queries: np.ndarray) -> None:
        self.ivf, self.dim = ivf, ivf.d
        self.levels = _LEVELS.get(ivf.sq.qtype) if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else None
        self.extended = np.zeros((len(queries), self.dim + 1), np.float32)  # one copy of the queries
        self.extended[:, :self.dim] = queries
        if self.levels is not None:
            trained = faiss.vector_to_array(ivf.sq.trained)
            half = len(trained) // 2  # vmin then vdiff: one each (uniform) or one per dimension
            vmin, vdiff = trained[:half], trained[half:]
            self.extended[:, self.dim] = queries.dot(np.broadcast_to(vmin, (self.dim,)))
            self.extended[:, :self.dim] *= vdiff / self.levels
            self.extended[:, self.dim] += self.extended[:, :self.dim].sum(axis=1) / 2

    def of_list(self, number: int, rows: np.ndarray) -> np.ndarray:
        """List `number`'s codes as float rows ending in 1, written into `rows` (as many as the list has)."""
        size = len(rows)
        stored = faiss.rev_swig_ptr(self.ivf.invlists.get_codes(number), size * self.ivf.code_size)
        stored = stored.reshape(size, self.ivf.code_size)
        if self.levels == 15.0:  # two components a byte, the even one in the low half
            rows[:, 0:self.dim:2] = stored & 15
            rows[:, 1:self.dim:2] = (stored >> 4)[:, :self.dim // 2]
        elif self.levels is not None:
            rows[:, :self.dim] = stored
        else:
            rows[:, :self.dim] = stored.view(np.float16 if isinstance(self.ivf, faiss.IndexIVFScalarQuantizer) else np.float32)
        return rows


def _heaps(scores: np.ndarray, rows: np.ndarray) -> faiss.float_minheap_array_t:
    """FAISS's k-best heaps (the k largest scores) over (queries, k) arrays, which they update in place."""
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k = scores.shape
    heaps.val, heaps.ids = faiss.swig_ptr(scores), faiss.swig_ptr(rows)
    return heaps


@contextmanager
def _one_faiss_thread() -> Iterator[None]:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)
