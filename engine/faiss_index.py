"""Build a FAISS index from a plan (on the GPU when asked and able), tune its search depth against
exact search, and search it with a row filter whatever its type."""

from __future__ import annotations

import faiss
import numpy as np

from engine.errors import InputError
from engine.index_types import IndexPlan

DEVICES = ("auto", "cpu", "gpu")
TARGET_RECALL = 0.95
TUNING_QUERIES = 500
TUNING_K = 10
TRAIN_POINTS_PER_LIST = 64  # k-means quality levels off well before FAISS's 256-per-list cap
ADD_BATCH = 65_536
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


def build_faiss_index(plan: IndexPlan, vectors: np.ndarray, device: str = "cpu", seed: int = 0) -> tuple[faiss.Index, str]:
    """The trained, filled index in its CPU form (which loads anywhere), and the device that built it.
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
    for start in range(0, len(vectors), ADD_BATCH):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_BATCH], dtype=np.float32))
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    return index, "gpu" if on_gpu else "cpu"


def _training_sample(index: faiss.Index, vectors: np.ndarray, seed: int) -> np.ndarray:
    ivf = faiss.try_extract_index_ivf(index)
    wanted = max(ivf.nlist * TRAIN_POINTS_PER_LIST if ivf is not None else 0, 256 * 39)
    if len(vectors) <= wanted:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), wanted, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def depth_parameter(index: faiss.Index) -> str | None:
    """The knob that trades speed for recall: nprobe (IVF), efSearch (HNSW), none (exact scans)."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    if isinstance(index, faiss.IndexHNSW):
        return "efSearch"
    return None


def tune(index: faiss.Index, vectors: np.ndarray, target: float = TARGET_RECALL, seed: int = 0) -> dict:
    """The smallest search depth whose recall@10 reaches `target` against exact search, measured with
    held-out queries drawn from the indexed vectors themselves (each query's own row excluded from both
    answers). Returns {"params": {...}, "recall@10": r, "queries": q}; recall is measured even for an
    index with no knob (8-bit codes are approximate too)."""
    queries = min(TUNING_QUERIES, len(vectors) - 1)
    if queries < 1:
        return {"params": {}, "recall@10": 1.0, "queries": 0}
    picked = np.random.default_rng(seed).choice(len(vectors), queries, replace=False)
    sample = np.ascontiguousarray(vectors[picked], dtype=np.float32)
    k = min(TUNING_K, len(vectors) - 1)
    exact = _without_self(faiss.knn(sample, np.ascontiguousarray(vectors, dtype=np.float32), k + 1,
                                    metric=faiss.METRIC_INNER_PRODUCT)[1], picked, k)
    knob = depth_parameter(index)
    steps = _depths(index, knob)
    recall = 0.0
    for depth in steps:
        params = {knob: depth} if knob else {}
        found = _without_self(index.search(sample, k + 1, params=search_parameters(index, params))[1], picked, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))
        if recall >= target:
            break
    return {"params": params, "recall@10": round(recall, 4), "queries": queries}


def _depths(index: faiss.Index, knob: str | None) -> list[int | None]:
    if knob == "nprobe":
        lists = faiss.extract_index_ivf(index).nlist
        return sorted({min(2 ** i, lists) for i in range(lists.bit_length() + 1)})
    if knob == "efSearch":
        return [16, 32, 64, 128, 256, 512, 1024, 2048]
    return [None]


def _without_self(rows: np.ndarray, own: np.ndarray, k: int) -> list[np.ndarray]:
    return [r[(r != o) & (r >= 0)][:k] for r, o in zip(rows, own)]


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
