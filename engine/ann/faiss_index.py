"""Build a FAISS index from a plan (on the GPU when asked and able), tune its search depth against
exact search on held-out rows, and search it (row filter, exact re-scoring of lossy codes) whatever its
type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from xlsearch.engine.errors import InputError
from xlsearch.engine.ann.index_types import IndexPlan
from xlsearch.engine.vectors import sorted_unique

DEVICES = ("auto", "cpu", "gpu")
TARGET_RECALL = 0.95
TUNING_QUERIES = 500
TUNING_K = 10
REFINE_STEPS = 3  # bisections after the doubling search: the depth found is within 1/8 of a doubling
TRAIN_POINTS_PER_LIST = 64  # k-means quality levels off well before FAISS's 256-per-list cap
ADD_BATCH = 65_536
RERANK_FACTOR = 10  # candidates per wanted hit that a product-quantised index hands to exact re-scoring
BLAS_QUERIES = 16  # up to this many queries, an exact flat scan is a BLAS product (all cores)
# mmap of the stored codes: a query loads only the pages it touches (IVF lists, flat blocks)
READ_FLAGS = faiss.IO_FLAG_MMAP_IFC


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def resolve_device(device: str) -> str:
    """cpu or gpu: `auto` takes the GPU when this faiss build has one; `gpu` without one is an error."""
    if device not in DEVICES:
        raise InputError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "auto":
        return "gpu" if gpu_count() else "cpu"
    if device == "gpu" and not gpu_count():
        raise InputError("--device gpu: this faiss has no GPU support or sees no CUDA device "
                         "(install faiss-gpu instead of faiss-cpu on a machine with a GPU)")
    return device


@dataclass
class BuiltIndex:
    index: faiss.Index
    device: str  # where it was trained and filled
    tuning: dict  # {"params": {...}, "recall@10": r, "queries": q}


def build_faiss_index(plan: IndexPlan, vectors: np.ndarray, device: str = "cpu", target: float = TARGET_RECALL,
                      seed: int = 0) -> BuiltIndex:
    """The trained, filled and tuned index in its CPU form (which loads anywhere). The last rows (up to
    TUNING_QUERIES, a tenth at most) are held out while everything else is added: they are the queries
    that tune the search depth against exact search, then they are added too, so row ids stay positions.
    HNSW has no GPU form and is built on the CPU."""
    try:
        index = faiss.index_factory(vectors.shape[1], plan.key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise InputError(f"--index-type {plan.key!r}: FAISS cannot build it ({reason})") from None
    if isinstance(index, faiss.IndexIVFPQ):  # polysemous codes serve Hamming pre-filtering, never used here
        index.do_polysemous_training = False
    on_gpu = device == "gpu" and plan.kind != "hnsw"
    if on_gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if not index.is_trained:
        index.train(_training_sample(index, vectors, seed))
    held_out = min(TUNING_QUERIES, len(vectors) // 10)
    kept = len(vectors) - held_out
    _add(index, vectors[:kept])
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    base = np.ascontiguousarray(vectors[:kept], dtype=np.float32)
    rerank = RERANK_FACTOR if is_lossy(index) else 1
    tuning = tune(index, base, np.ascontiguousarray(vectors[kept:], dtype=np.float32), target, rerank)
    _add(index, vectors[kept:])
    return BuiltIndex(index, "gpu" if on_gpu else "cpu", tuning)


def _add(index: faiss.Index, vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), ADD_BATCH):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_BATCH], dtype=np.float32))


def _training_sample(index: faiss.Index, vectors: np.ndarray, seed: int) -> np.ndarray:
    ivf = faiss.try_extract_index_ivf(index)
    wanted = max(ivf.nlist * TRAIN_POINTS_PER_LIST if ivf is not None else 0, 256 * 39)
    if len(vectors) <= wanted:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), wanted, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def is_lossy(index: faiss.Index) -> bool:
    """Product-quantised codes lose too much to rank by: their candidates are re-scored exactly."""
    ivf = faiss.try_extract_index_ivf(index)
    return isinstance(faiss.downcast_index(ivf) if ivf is not None else index, (faiss.IndexIVFPQ, faiss.IndexPQ))


def depth_parameter(index: faiss.Index) -> str | None:
    """The knob that trades speed for recall: nprobe (IVF), efSearch (HNSW), none (exact scans)."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    if isinstance(index, faiss.IndexHNSW):
        return "efSearch"
    return None


def tune(index: faiss.Index, base: np.ndarray, queries: np.ndarray, target: float = TARGET_RECALL,
         rerank: int = 1) -> dict:
    """The smallest search depth whose recall@10 for `queries` (not in the index) reaches `target`
    against exact search over `base` (what the index holds), less two standard errors (recall_bound). Recall is measured even for an index with
    no knob (8-bit codes are approximate too). With `rerank`, that many times 10 candidates are re-scored
    exactly, as searches will do."""
    if len(queries) == 0 or len(base) == 0:
        return {"params": {}, "recall@10": 1.0, "queries": 0}
    k = min(TUNING_K, len(base))
    exact = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    knob = depth_parameter(index)

    def measured(depth: int | None) -> tuple[dict, np.ndarray]:
        params = ({knob: depth} if knob else {}) | ({"rerank": rerank} if rerank > 1 else {})
        found = search(index, queries, k, params, exact_vectors=lambda rows: base[rows])[1]
        return params, per_query_recall(found, exact)

    shallower = None  # the deepest depth tried that fell short
    for depth in _depths(index, knob):
        params, recalls = measured(depth)
        if recall_bound(recalls) >= target:
            break
        shallower = depth
    if shallower is not None and recall_bound(recalls) >= target:
        # the doubling overshoots by up to 2x, and search time grows with depth: bisect the last step
        deeper = depth
        for _ in range(REFINE_STEPS):
            middle = (shallower + deeper) // 2
            if middle in (shallower, deeper):
                break
            middle_params, middle_recalls = measured(middle)
            if recall_bound(middle_recalls) >= target:
                deeper, params, recalls = middle, middle_params, middle_recalls
            else:
                shallower = middle
    return {"params": params, "recall@10": round(float(recalls.mean()), 4), "queries": len(queries)}


def per_query_recall(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.array([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)])


def recall_bound(recalls: np.ndarray) -> float:
    """Mean recall less two standard errors: tuned on its own mean, an index would fall short of the
    target for about half of all other queries (at 1M, 0.948 on fresh queries for 0.952 when tuned)."""
    if len(recalls) < 2:
        return float(recalls.mean()) if len(recalls) else 1.0
    return float(recalls.mean() - 2 * recalls.std(ddof=1) / np.sqrt(len(recalls)))


def _depths(index: faiss.Index, knob: str | None) -> list[int | None]:
    if knob == "nprobe":
        lists = faiss.extract_index_ivf(index).nlist
        return sorted({min(2 ** i, lists) for i in range(lists.bit_length() + 1)})
    if knob == "efSearch":
        return [16, 32, 64, 128, 256, 512, 1024, 2048]
    return [None]


def search(index: faiss.Index, queries: np.ndarray, k: int, params: dict, selector: faiss.IDSelector | None = None,
           exact_vectors: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) with the tuned parameters. A few queries on an exact flat index are a BLAS
    matrix-vector product over its (memory-mapped) vectors: FAISS scans for a single query on one thread.
    With params["rerank"] and `exact_vectors` (rows -> vectors), k x rerank candidates are re-scored
    exactly."""
    if selector is None and isinstance(index, faiss.IndexFlat) and len(queries) <= BLAS_QUERIES:
        return _blas_scan(index, queries, k)
    rerank = int(params.get("rerank", 1)) if exact_vectors is not None else 1
    scores, rows = index.search(queries, k * rerank, params=search_parameters(index, params, selector))
    if rerank == 1:
        return scores, rows
    found = rows >= 0
    unique = sorted_unique(rows[found])
    vectors = np.asarray(exact_vectors(unique), dtype=np.float32)
    candidates = vectors[np.searchsorted(unique, np.maximum(rows, 0))]
    exact = np.where(found, np.einsum("qcd,qd->qc", candidates, queries), -np.inf)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _blas_scan(index: faiss.IndexFlat, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    stored = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    scores = (stored @ queries.T).T  # matrix-vector products, the layout BLAS streams fastest
    k = min(k, index.ntotal)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    rows = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(scores, rows, axis=1).astype(np.float32), rows.astype(np.int64)


def search_parameters(index: faiss.Index, params: dict, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters:
    """Per-call search parameters: the tuned depth and an optional row filter, for any index type."""
    knob = depth_parameter(index)
    if knob == "nprobe":
        result = faiss.SearchParametersIVF()
        if params.get("nprobe"):
            result.nprobe = int(params["nprobe"])
    elif knob == "efSearch":
        result = faiss.SearchParametersHNSW()
        if params.get("efSearch"):
            result.efSearch = int(params["efSearch"])
    else:
        result = faiss.SearchParameters()
    if selector is not None:
        result.sel = selector
    return result


def read_faiss_index(path: str) -> faiss.Index:
    return faiss.read_index(path, READ_FLAGS)
