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
without). That setting is the calling thread's (OpenMP's), so other threads' searches keep theirs."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import faiss
import numpy as np

# Below this many queries a batch is IndexIVF.search's: reading every list has a fixed cost (about 0.7 s
# a batch on the 5M index's 7,281 lists, a tenth of 10,000 queries' scan at nprobe 144). The crossover
# itself was not measured; the neighbourhood step's batches are 10,000 rows or 1,024 (out_of_core).
LIST_SCAN_QUERIES = 4096
# Scores of one product at most (4 MB): the queries probing a long list are scored a block at a time. The
# lists of an index are uneven, and the long ones are probed by the most queries: scoring them at once took
# a scan of 10,000 queries on 1M rows' IVF910,SQ4 from 28 MB (its arrays) to 60 MB (tracemalloc's peak).
PRODUCT_SCORES = 1 << 20

_QUANTIZER = faiss.ScalarQuantizer
_LEVELS = {_QUANTIZER.QT_8bit: 255.0, _QUANTIZER.QT_8bit_uniform: 255.0,
           _QUANTIZER.QT_4bit: 15.0, _QUANTIZER.QT_4bit_uniform: 15.0}
_HALF = (_QUANTIZER.QT_fp16,)


def scan_batch(budget: int, dim: int, k: int, nprobe: int) -> int:
    """How many queries one scan_lists call takes within `budget` bytes: each query's scaled copy
    (4 (dim + 1) bytes), its k best (12 k) and its (query, list) pairs (24 nprobe), beside one product's
    scores and the part of them kept (8 MB)."""
    return max(0, (budget - 8 * PRODUCT_SCORES) // (4 * (dim + 1) + 12 * k + 24 * nprobe))


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


def scan_lists(ivf: faiss.IndexIVF, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best rows among the `nprobe` lists nearest it, best first: (scores, rows), as
    IndexIVF.search gives them (-3.4e38 and -1 where fewer are in reach). `ivf`: scannable's."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nprobe = max(1, min(int(nprobe), ivf.nlist))
    coarse, probed = ivf.quantizer.search(queries, nprobe)
    codes = _Codes(ivf, queries)
    scores = np.empty((len(queries), k), np.float32)
    rows = np.empty((len(queries), k), np.int64)
    heaps = _heaps(scores, rows)
    heaps.heapify()
    # (query, list) pairs grouped by list: each list's queries are a slice of `by_list`
    by_list = np.argsort(probed.ravel(), kind="stable")
    bounds = np.searchsorted(probed.ravel(), np.arange(ivf.nlist + 1), sorter=by_list)
    coarse = coarse.ravel()[by_list] if ivf.by_residual else None
    del probed  # memory follows the batch: (queries x nprobe) pairs, 20 bytes each
    dim = ivf.d
    widest = int(np.diff(bounds).max()) if len(bounds) > 1 else 0
    asked = np.empty((widest, dim + 1), np.float32)  # a list's queries, scaled, and their constant
    with _one_faiss_thread():
        for number in np.flatnonzero(np.diff(bounds)):
            size = ivf.invlists.list_size(int(number))
            if size == 0:
                continue
            listed = codes.of_list(int(number), size)
            ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(int(number)), size)
            step = max(1, PRODUCT_SCORES // size)
            for first in range(bounds[number], bounds[number + 1], step):
                pairs = slice(first, min(first + step, bounds[number + 1]))
                asking = by_list[pairs] // nprobe
                part = asked[:len(asking)]
                np.take(codes.extended, asking, axis=0, out=part)
                if coarse is not None:
                    part[:, dim] += coarse[pairs]
                found = part @ listed.T
                kept_scores = scores[asking]
                better = (found > kept_scores[:, :1]).any(axis=1)
                if not better.all():
                    asking, found, kept_scores = asking[better], np.ascontiguousarray(found[better]), kept_scores[better]
                    if not len(asking):
                        continue
                kept_rows = rows[asking]
                _heaps(kept_scores, kept_rows).addn_with_ids(size, faiss.swig_ptr(found), faiss.swig_ptr(ids), 0, 0, len(asking))
                scores[asking], rows[asking] = kept_scores, kept_rows
        heaps.reorder()
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
        self.rows = np.ones((0, self.dim + 1), np.float32)  # reused for every list, grown to the longest

    def of_list(self, number: int, size: int) -> np.ndarray:
        if len(self.rows) < size:
            self.rows = np.ones((size, self.dim + 1), np.float32)
        rows = self.rows[:size]
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
