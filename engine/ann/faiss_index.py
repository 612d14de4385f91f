"""Build a FAISS index from a plan (trained and filled on the GPU when one is usable and the plan has a
GPU form), tune its search depth against exact search on held-out rows, and search it (row filter, exact
re-scoring of lossy codes) whatever its type. Which device: resolve_device, after engine.ann.gpu's probe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from xlsearch.engine.errors import InputError
from xlsearch.engine.ann.gpu import GpuProbe, gpu_resources, probe_gpu
from xlsearch.engine.ann.on_disk import open_on_disk
from xlsearch.engine.ann.index_types import POINTS_PER_LIST, TRAIN_POINTS_PER_LIST, IndexPlan
from xlsearch.engine.ann.list_scan import LIST_SCAN_QUERIES, scan_lists, scannable
from xlsearch.engine.ranking.margin import MARGIN_K
from xlsearch.engine.vectors import sorted_unique

DEVICES = ("auto", "cpu", "gpu")
TARGET_RECALL = 0.95
TUNING_QUERIES = 500
TUNING_K = 10
REFINE_STEPS = 3  # bisections after the doubling search: the depth found is within 1/8 of a doubling
CODEBOOK_CENTROIDS = 256  # of an 8-bit code book (PQ, SQ): the least any training sample must cover
ADD_BATCH = 65_536
RERANK_FACTOR = 10  # candidates per wanted hit that a product-quantised index hands to exact re-scoring
# Margin neighbourhoods through an approximate index: searched as deep as makes NEIGHBOURHOOD_SHARE of the
# tuning queries' neighbourhoods within NEIGHBOURHOOD_GAP of exact, so that two builds of the same rows
# are within twice the gap (0.002, issue 16's bound for an append against a rebuild) of each other for
# about 99% of rows. On 1M rows of the fitted mixture (IVF3640,SQ8, 2,000 rows against exact): 93.3%
# within 0.001 at the queries' depth (nprobe 88), 99.45% at 264; an append and a rebuild, each at its
# tuned depth (288), agreed within 0.002 for 98.6% of rows (plain means of the 4 nearest; 94.6% before).
NEIGHBOURHOOD_GAP, NEIGHBOURHOOD_SHARE = 0.001, 0.995
# Margin neighbourhoods through an index of codes (8-bit ones too) take twice their candidates from the codes
# and keep the best by exact cosine: a row's 8th nearest sits among many near-equal cosines, and 8-bit codes'
# errors (about 0.001) reorder them. 200k rows of the fitted mixture (IVF711,SQ8, parallel-margin, nprobe
# 104), every row's stored neighbourhood against exact: within 0.002 for 0.9878 from the codes' 8 best,
# 0.9922 from the same 8 re-scored, 0.9970 from 16 re-scored; an append (nprobe 72) and its rebuild agreed
# for 0.9792 of rows from the codes, 0.9890 from 16 re-scored (docs/benchmarks.md).
NEIGHBOURHOOD_RERANK = 2
# Candidates re-scored per call: their vectors are gathered, and a (queries x candidates x dims) product
# formed, each 12 MB at 384 dims (1,024 neighbourhood queries x 90 candidates took 141 MB each)
RERANK_ROWS = 8192
BLAS_QUERIES = 16  # up to this many queries, an exact flat scan is a BLAS product (all cores)
# FAISS scores nq queries of d dimensions against a flat set (an exact index, a coarse quantiser, k-means'
# centroids) one vector at a time while nq x d is below distance_compute_blas_threshold, else as one
# matrix product (BLAS). FAISS 1.15's default, 128,000, keeps up to 333 queries of 384 dimensions on the
# sequential path. Measured on this project's 2-core VM (AVX2, OpenBLAS; flat inner product over 20,000
# vectors, 1 and 2 threads, best of 5): one query is up to 2.6x faster sequential at 384, 1,024 and 2,560
# dimensions and two about even; from four the product is faster (1.5-1.8x), from 64 queries of 384 10x;
# a product quantiser's training (k-means of 12,000 points of 8 dimensions, 48 times) took 25.8 s
# sequential, 2.2 s as products, on one thread. So one query of up to 2,560 dimensions stays sequential.
BLAS_THRESHOLD = 2_561
faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD  # process-wide, as FAISS keeps it
# mmap of the stored codes: a query loads only the pages it touches (IVF lists, flat blocks)
READ_FLAGS = faiss.IO_FLAG_MMAP_IFC
# Plan kinds trained and filled on a usable GPU: inverted files, whose k-means and list assignment are
# matrix products. HNSW has no GPU form, and an exact scan has nothing to train (adding is a copy).
GPU_KINDS = ("ivf", "ivfpq", "factory")
CODE_PRECISION = ("pq", "sq8", "float16", "float32")  # IndexPlan.storage, coarsest first


def gpu_count() -> int:
    """GPUs this faiss can use here: engine.ann.gpu's probe found GPU 0 usable (0 with faiss-cpu)."""
    probe = probe_gpu()
    return probe.gpus if probe.usable else 0


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "gpu": where indexes are trained and filled, and exact neighbourhoods computed
    notice: str | None = None  # one line for the user: why `auto` left this machine's GPU unused
    gpu: GpuProbe | None = None  # the usable GPU (name, memory) when device is "gpu"


def resolve_device(device: str) -> DeviceChoice:
    """Where to build: `cpu` as asked; `auto` the GPU when the probe found it usable, else the CPU, with a
    notice when there is a GPU this faiss cannot run on; `gpu` the GPU, or InputError saying why not.
    Never prints: the caller shows `notice`."""
    if device not in DEVICES:
        raise InputError(f"expected one of {', '.join(DEVICES)}", field="device", value=device)
    if device == "cpu":
        return DeviceChoice("cpu")
    probe = probe_gpu()
    if probe.usable:
        return DeviceChoice("gpu", gpu=probe)
    if device == "gpu":
        raise InputError(probe.reason, field="device", value=device)
    return DeviceChoice("cpu", notice=f"{probe.reason}; building on the CPU" if probe.gpus else None)


@dataclass
class BuiltIndex:
    index: faiss.Index
    device: str  # where it was trained and filled
    # {"params": {...}, "recall@10": r, "queries": q, "neighbourhood_params": {...}, "neighbourhoods_within": share}
    tuning: dict
    plan: IndexPlan
    below_target: bool = False  # even the deepest search tuning tried fell short of the recall target
    trained_on: int = 0  # vectors in the training sample (0: nothing to train)
    # build_first_reaching's other plans, built and dropped, each short of the target: key, params, recall@10
    also_tried: tuple[dict, ...] = ()


def build_faiss_index(plan: IndexPlan, vectors: np.ndarray, device: str = "cpu", target: float = TARGET_RECALL,
                      seed: int = 0) -> BuiltIndex:
    """The trained, filled and tuned index in its CPU form (which loads anywhere). The last rows (up to
    TUNING_QUERIES, a tenth at most) are held out while everything else is added: they are the queries
    that tune the search depth against exact search, then they are added too, so row ids stay positions.
    With `device` "gpu" (from resolve_device), plans of GPU_KINDS are trained and filled on the GPU; the
    rest, and a factory string faiss has no GPU form of, are built on the CPU."""
    index = new_index(plan, vectors.shape[1])
    sample = None if index.is_trained else training_sample(index, vectors, seed)  # before a move to the GPU
    on_gpu = _gpu_form(index) if device == "gpu" and plan.kind in GPU_KINDS else None
    working = index if on_gpu is None else on_gpu
    if sample is not None:
        working.train(sample)
    kept = len(vectors) - held_out_count(len(vectors))
    _add(working, vectors[:kept])
    if on_gpu is not None:
        index = faiss.index_gpu_to_cpu(on_gpu)
    base = np.ascontiguousarray(vectors[:kept], dtype=np.float32)
    rerank = RERANK_FACTOR if is_lossy(index) else 1
    tuning, reached = _tuned(index, base, np.ascontiguousarray(vectors[kept:], dtype=np.float32), target, rerank)
    _add(index, vectors[kept:])
    return BuiltIndex(index, "cpu" if on_gpu is None else "gpu", tuning, plan, below_target=not reached,
                      trained_on=0 if sample is None else len(sample))


def new_index(plan: IndexPlan, dim: int) -> faiss.Index:
    """The empty, untrained index of `plan`, or InputError where FAISS cannot make it."""
    try:
        index = faiss.index_factory(dim, plan.key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise InputError(f"FAISS cannot build it ({reason})", field="index_type", value=plan.key) from None
    if isinstance(index, faiss.IndexIVFPQ):  # polysemous codes serve Hamming pre-filtering, never used here
        index.do_polysemous_training = False
    return index


def held_out_count(count: int) -> int:
    """How many of the last rows tune the search depth (a tenth at most), added only once it is tuned."""
    return min(TUNING_QUERIES, count // 10)


def build_first_reaching(plans: Sequence[IndexPlan], vectors: np.ndarray, device: str = "cpu",
                         target: float = TARGET_RECALL, seed: int = 0) -> BuiltIndex:
    """The first of `plans` (index_types.plan_candidates' order) whose tuning reaches `target`. A plan is
    passed over when one of its kind with codes at least as fine fell short: the same graph or lists
    with coarser codes reach no further. When none reaches it, the closest, with below_target set."""
    closest = None
    tried: list[dict] = []
    short: dict[str, int] = {}  # kind -> the finest codes that fell short
    for plan in plans:
        precision = CODE_PRECISION.index(plan.storage) if plan.storage in CODE_PRECISION else None
        if precision is not None and plan.kind != "factory" and precision <= short.get(plan.kind, -1):
            continue
        built = build_faiss_index(plan, vectors, device, target, seed)
        if not built.below_target:
            return replace(built, also_tried=tuple(tried))
        tried.append({"key": plan.key, "params": built.tuning["params"], "recall@10": built.tuning["recall@10"]})
        if precision is not None:
            short[plan.kind] = max(precision, short.get(plan.kind, -1))
        if closest is None or built.tuning["recall@10"] > closest.tuning["recall@10"]:
            closest = built
    if closest is None:
        raise ValueError("build_first_reaching: no plan given")
    return replace(closest, also_tried=tuple(entry for entry in tried if entry["key"] != closest.plan.key))


def _gpu_form(index: faiss.Index) -> faiss.Index | None:
    """`index` moved to GPU 0, or None where faiss has no GPU form of it (a factory string's type)."""
    try:
        return faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
    except RuntimeError:
        return None


def _add(index: faiss.Index, vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), ADD_BATCH):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_BATCH], dtype=np.float32))


def training_sample_size(index: faiss.Index) -> int:
    """How many vectors train `index`, from what its plan builds: TRAIN_POINTS_PER_LIST per inverted list,
    and at least POINTS_PER_LIST (k-means' minimum) per code book centroid. Ask the CPU index made from
    the plan: faiss cannot see the inverted file inside a GPU index (try_extract_index_ivf answers None),
    which once trained 4,000 lists on 9,984 points."""
    ivf = faiss.try_extract_index_ivf(index)
    pq = getattr(faiss.downcast_index(ivf if ivf is not None else index), "pq", None)
    centroids = max(CODEBOOK_CENTROIDS, pq.ksub if pq is not None else 0)
    return max(ivf.nlist * TRAIN_POINTS_PER_LIST if ivf is not None else 0, centroids * POINTS_PER_LIST)


def training_sample(index: faiss.Index, vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """training_sample_size(index) rows drawn without replacement (all of them when there are fewer)."""
    return np.ascontiguousarray(vectors[training_rows(index, len(vectors), seed)], dtype=np.float32)


def training_rows(index: faiss.Index, count: int, seed: int = 0) -> np.ndarray:
    """Which of `count` rows train `index`, sorted: the same rows whether they are in memory or in shards."""
    wanted = training_sample_size(index)
    if count <= wanted:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, wanted, replace=False))


def _storage(index: faiss.Index) -> faiss.Index:
    """The index that holds the vectors' codes: an inverted file's own type, or the index itself."""
    ivf = faiss.try_extract_index_ivf(index)
    return faiss.downcast_index(ivf) if ivf is not None else index


def stores_codes(index: faiss.Index) -> bool:
    """Whether `index` scores compressed codes (scalar or product quantised) rather than the vectors."""
    return isinstance(_storage(index), (faiss.IndexIVFPQ, faiss.IndexPQ, faiss.IndexIVFScalarQuantizer,
                                        faiss.IndexScalarQuantizer))


def is_lossy(index: faiss.Index) -> bool:
    """Product-quantised and 4-bit codes lose too much to rank by: their candidates are re-scored
    exactly."""
    codes = _storage(index)
    if isinstance(codes, (faiss.IndexIVFPQ, faiss.IndexPQ)):
        return True
    scalar = getattr(codes, "sq", None)
    return scalar is not None and scalar.qtype in (faiss.ScalarQuantizer.QT_4bit, faiss.ScalarQuantizer.QT_4bit_uniform)


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
    exactly, as searches will do. Short of the target even at the deepest depth, that depth."""
    return _tuned(index, base, queries, target, rerank)[0]


def _tuned(index: faiss.Index, base: np.ndarray, queries: np.ndarray, target: float, rerank: int) -> tuple[dict, bool]:
    """tune()'s answer, and whether it reached the target."""
    if len(queries) == 0 or len(base) == 0:
        return {"params": {}, "recall@10": 1.0, "queries": 0}, True
    exact = faiss.knn(queries, base, min(TUNING_K, len(base)), metric=faiss.METRIC_INNER_PRODUCT)[1]
    return tuned_against(index, queries, exact, target, rerank, lambda rows: base[rows])


def tuned_against(index: faiss.Index, queries: np.ndarray, exact: np.ndarray, target: float, rerank: int,
                  exact_vectors: Callable[[np.ndarray], np.ndarray],
                  selector: faiss.IDSelector | None = None) -> tuple[dict, bool]:
    """The tuning of `index` for `queries` whose exact nearest rows are `exact` (their row ids, best
    first), and whether it reached the target; `selector` keeps the queries themselves out of reach where
    the index holds them (the out-of-core build tunes after adding every row). Then the depth of the
    neighbourhood search (neighbourhood_tuning), from that depth on."""
    k = exact.shape[1]
    knob = depth_parameter(index)

    def measured(depth: int | None) -> tuple[dict, np.ndarray]:
        params = _search_params(knob, depth, rerank)
        found = search(index, queries, k, params, selector, exact_vectors=exact_vectors)[1]
        return params, per_query_recall(found, exact)

    depth, (params, recalls) = _shallowest(_depths(index, knob), measured, lambda result: recall_bound(result[1]) >= target)
    tuning = {"params": params, "recall@10": round(float(recalls.mean()), 4), "queries": len(queries)}
    tuning |= neighbourhood_tuning(index, queries, exact, depth, rerank, exact_vectors, selector)
    return tuning, recall_bound(recalls) >= target


def neighbourhood_tuning(index: faiss.Index, queries: np.ndarray, exact: np.ndarray, start: int | None, rerank: int,
                         exact_vectors: Callable[[np.ndarray], np.ndarray],
                         selector: faiss.IDSelector | None = None) -> dict:
    """The search depth for margin neighbourhoods (each row's mean cosine to its MARGIN_K nearest): the
    shallowest from `start` (the queries' tuned depth) on at which NEIGHBOURHOOD_SHARE of `queries` have
    their neighbourhood within NEIGHBOURHOOD_GAP of the exact one (`exact`: their nearest rows), with
    candidates re-scored exactly as the queries' are (`rerank`), and at least NEIGHBOURHOOD_RERANK times
    as many where the index holds codes.
    {"neighbourhood_params": ..., "neighbourhoods_within": share}."""
    knob = depth_parameter(index)
    k = min(MARGIN_K, exact.shape[1])
    if len(queries) == 0 or k == 0:
        return {}
    top = exact[:, :k]
    wanted = sorted_unique(top.ravel())
    exact_means = np.einsum("qkd,qd->qk", exact_vectors(wanted)[np.searchsorted(wanted, top)], queries).mean(axis=1)

    rerank = max(rerank, NEIGHBOURHOOD_RERANK) if stores_codes(index) else rerank

    def measured(depth: int | None) -> tuple[dict, float]:
        params = _search_params(knob, depth, rerank)
        found = search(index, queries, k, params, selector, exact_vectors=exact_vectors)[0]
        return params, float((np.abs(found.mean(axis=1) - exact_means) <= NEIGHBOURHOOD_GAP).mean())

    depths = [start] + [depth for depth in _depths(index, knob) if start is not None and depth > start]
    _, (params, share) = _shallowest(depths, measured, lambda result: result[1] >= NEIGHBOURHOOD_SHARE)
    return {"neighbourhood_params": params, "neighbourhoods_within": round(share, 4)}


def neighbourhood_params(tuning: dict) -> dict:
    """The search parameters of margin neighbourhoods in a tuning (or a manifest's index entry): their
    own, or the queries' where there are none (too few rows to tune; indexes written before them)."""
    return tuning.get("neighbourhood_params", tuning.get("params", {}))


def _search_params(knob: str | None, depth: int | None, rerank: int) -> dict:
    """The parameters a tuning tries: the depth on the index's knob (none for exact scans), and the
    candidates re-scored per hit where they are (rerank above 1)."""
    return ({knob: depth} if knob else {}) | ({"rerank": rerank} if rerank > 1 else {})


def _shallowest(depths: list, measured: Callable, reaches: Callable[[tuple], bool]) -> tuple:
    """The first of `depths` (ascending, doubling) whose measurement reaches, then the step before it
    bisected: the doubling overshoots by up to 2x, and search time grows with depth. The deepest when
    none reaches. Returns (depth, its measurement)."""
    shallower = None  # the deepest depth tried that fell short
    for depth in depths:
        result = measured(depth)
        if reaches(result):
            break
        shallower = depth
    if shallower is None or not reaches(result):
        return depth, result
    deeper = depth
    for _ in range(REFINE_STEPS):
        middle = (shallower + deeper) // 2
        if middle in (shallower, deeper):
            break
        middle_result = measured(middle)
        if reaches(middle_result):
            deeper, result = middle, middle_result
        else:
            shallower = middle
    return deeper, result


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
    matrix-vector product over its (memory-mapped) vectors: FAISS scans for a single query on one thread;
    many queries on an inverted file whose codes list_scan reads are scanned list by list. With
    params["rerank"] and `exact_vectors` (rows -> vectors), k x rerank candidates are re-scored exactly
    (rerank 1: the k found, their scores made exact)."""
    if selector is None and isinstance(index, faiss.IndexFlat) and len(queries) <= BLAS_QUERIES:
        return _blas_scan(index, queries, k)
    rescored = exact_vectors is not None and int(params.get("rerank", 0)) >= 1
    rerank = int(params["rerank"]) if rescored else 1
    step = max(1, RERANK_ROWS // (k * rerank))  # the gathered vectors, a block of queries at a time
    lists = scannable(index) if selector is None and len(queries) >= LIST_SCAN_QUERIES else None
    if lists is None and rescored and len(queries) > step:  # FAISS's search re-scored a block at a time
        parts = [search(index, queries[start:start + step], k, params, selector, exact_vectors)
                 for start in range(0, len(queries), step)]
        return np.vstack([part[0] for part in parts]), np.vstack([part[1] for part in parts])
    if lists is not None:
        scores, rows = scan_lists(lists, queries, k * rerank, int(params.get("nprobe") or lists.nprobe))
    else:
        scores, rows = index.search(queries, k * rerank, params=search_parameters(index, params, selector))
    if not rescored:
        return scores, rows
    del scores  # the codes' scores: held through the re-scoring, they would only add to its memory
    parts = [_rescored(queries[start:start + step], rows[start:start + step], k, exact_vectors)
             for start in range(0, len(queries), step)]
    return np.vstack([part[0] for part in parts]), np.vstack([part[1] for part in parts])


def _rescored(queries: np.ndarray, rows: np.ndarray, k: int,
              exact_vectors: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each query's candidates `rows` (-1: none) by exact inner product."""
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


def read_faiss_index(path: str, on_disk: bool = False) -> faiss.Index:
    """The index in `path`, its codes memory-mapped; `on_disk`: its lists in the file beside it."""
    return open_on_disk(Path(path)) if on_disk else faiss.read_index(path, READ_FLAGS)
