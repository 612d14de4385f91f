"""Which FAISS index for how many vectors, of what dimension, in how much memory.

`auto` follows autofaiss's reasoning: an exact scan while it is cheap, a graph (HNSW) while it fits (its
build costs minutes per million vectors, far less than embedding them), then with 8-bit codes, then an
inverted file (IVF) with 8-bit codes, then product quantisation (IVF-PQ, re-scored exactly from the
stored vectors). Measured on realistic vectors (docs/benchmarks.md), IVF needs a deep probe to reach
recall@10 0.95, where HNSW answers in about a millisecond. The estimate is
the index's resident size at query time; a plan over `max_memory` is refused with the numbers.

With a usable GPU (`gpu_memory`), `auto` puts first what the GPU makes cheap: an inverted file, trained and
filled on the GPU, at the storage asked and then with 8-bit codes, each while it fits in GPU_MEMORY_SHARE
of the GPU's memory. At 1M x 384 on an H200 (issue 14) IVF4000,Flat was built in 5.2 s on the GPU, where
HNSW32 took 49.4 s on 16 cores and its tuning stopped short of recall@10 0.95 at efSearch 2048; probing
more lists always reaches the target, at worst by scanning them all. Queries run on the CPU either way,
and there the two answer about as fast once tuned: on 1M x 384 from bench.gpu's mixture (2 cores),
IVF4000,Flat at nprobe 96 (recall@10 0.963) in 1.9 ms p50, HNSW32 at efSearch 320 (0.959) in 1.6 ms.
`python -m bench.gpu` measures both sides on the machine at hand. When nothing fits on the GPU, the
CPU's order."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace

from xlsearch.engine.errors import InputError

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
STORAGES = ("float32", "float16", "sq8")
# Below this many vectors an exact scan answers in about a millisecond here (20k x 384), and an
# approximate index would only cost recall.
EXACT_BELOW = 20_000
HNSW_NEIGHBOURS = 32
# k-means wants at least 39 training points per list (faiss warns below that)
POINTS_PER_LIST = 39
TRAIN_POINTS_PER_LIST = 64  # k-means quality levels off well before FAISS's 256-per-list cap
# An on-disk plan's training sample is in memory about three times at its peak (gathered, made
# language-neutral, and FAISS's residuals for the codes): 256,000 x 384 (393 MB) raised the peak RSS of
# a build by 1,109 MB (bench.out_of_core, 1M at 1GB). It has as many lists as a third of the budget trains.
TRAINING_COPIES = 3
DEFAULT_MEMORY_SHARE = 0.8  # of physical memory, when no max_memory is given
# Of a GPU's memory, the most an index trained and filled there may take: its inverted lists grow by
# reallocation while vectors are added (briefly twice a list's size), beside faiss's scratch memory.
GPU_MEMORY_SHARE = 0.5

# sq4 (4-bit codes, re-scored exactly like PQ) is for on-disk plans, not a storage to ask for
_CODES = {"float32": "Flat", "float16": "SQfp16", "sq8": "SQ8", "sq4": "SQ4"}
_BYTES_PER_VALUE = {"float32": 4, "float16": 2, "sq8": 1, "sq4": 0.5}


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # flat, hnsw, ivf, ivfpq, or factory for a FAISS factory string given as is
    key: str  # the FAISS factory string
    storage: str
    estimated_bytes: int | None  # None for a factory string: its size is not known before it is built
    # its lists in a file, memory-mapped (engine.ann.on_disk), built shard by shard from embedding shards
    on_disk: bool = False

    def describe(self) -> str:
        size = f", about {format_bytes(self.estimated_bytes)}" if self.estimated_bytes is not None else ""
        where = ", on disk: the vectors do not fit the memory budget" if self.on_disk else ""
        return f"{self.key} ({self.kind}, {self.storage}{size}{where})"


def ivf_lists(count: int) -> int:
    """4 * sqrt(n) lists, as FAISS's guidelines suggest, but never fewer training points per list than
    k-means needs."""
    return max(1, min(int(4 * math.sqrt(count)), count // POINTS_PER_LIST))


def pq_subquantizers(dim: int) -> int:
    """One byte per 8 dimensions (sub-vectors of 8 values), the largest such count dividing `dim`."""
    return next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)


def plan_for(kind: str, count: int, dim: int, storage: str = "float32", lists: int | None = None) -> IndexPlan:
    """The factory string and size estimate of an index type for `count` vectors of `dim` values (an
    inverted file's: with `lists` lists, default ivf_lists)."""
    if storage not in _CODES:
        raise InputError(f"expected one of {', '.join(STORAGES)}", field="storage", value=storage)
    code = math.ceil(_BYTES_PER_VALUE[storage] * dim)
    lists = lists or ivf_lists(count)
    centroids = lists * dim * 4
    if kind == "flat":
        return IndexPlan(kind, _CODES[storage], storage, count * code)
    if kind == "hnsw":
        key = f"HNSW{HNSW_NEIGHBOURS}" + ("" if storage == "float32" else f"_{_CODES[storage]}")
        # level 0 keeps 2M neighbour ids of 4 bytes; the upper levels add about a tenth
        return IndexPlan(kind, key, storage, int(count * (code + 2 * HNSW_NEIGHBOURS * 4 * 1.1)))
    if kind == "ivf":
        return IndexPlan(kind, f"IVF{lists},{_CODES[storage]}", storage, count * (code + 8) + centroids)
    if kind == "ivfpq":
        m = pq_subquantizers(dim)
        return IndexPlan(kind, f"IVF{lists},PQ{m}", "pq", count * (m + 8) + centroids + 256 * dim * 4)
    if kind in INDEX_TYPES:
        raise ValueError(f"plan_for: {kind!r} is chosen by choose_plan")
    return IndexPlan("factory", kind, storage, None)


def choose_plan(index_type: str, count: int, dim: int, storage: str = "float32",
                max_memory: int | None = None, gpu_memory: int | None = None) -> IndexPlan:
    """The plan for `index_type` (auto: the most exact that fits), refused when over `max_memory`;
    `gpu_memory`: the bytes of a usable GPU (engine.ann.gpu), None without one."""
    return plan_candidates(index_type, count, dim, storage, max_memory, gpu_memory)[0]


def plan_candidates(index_type: str, count: int, dim: int, storage: str = "float32",
                    max_memory: int | None = None, gpu_memory: int | None = None,
                    out_of_core: bool = False) -> list[IndexPlan]:
    """The plans to try in order (faiss_index.build_first_reaching moves on when tuning falls short of
    the recall target): an explicit type's one plan; for auto, each candidate within `max_memory`, the
    one choose_plan picks first. InputError when not even the last candidate fits. With `out_of_core`
    (the vectors are in shards, not in memory) and raw vectors over the budget, inverted files on disk."""
    budget = max_memory or default_memory_budget()
    if out_of_core and index_type in ("auto", "ivf", "ivfpq") and count * dim * 4 > budget:
        return on_disk_candidates(index_type, count, dim, storage, budget)
    if index_type == "auto":
        if count < EXACT_BELOW:
            candidates = [plan_for("flat", count, dim, storage)]
        else:
            candidates = [plan_for("hnsw", count, dim, storage), plan_for("hnsw", count, dim, "sq8"),
                          plan_for("ivf", count, dim, "sq8"), plan_for("ivfpq", count, dim)]
            if gpu_memory is not None:
                on_gpu = [plan for plan in (plan_for("ivf", count, dim, storage), plan_for("ivf", count, dim, "sq8"))
                          if plan.estimated_bytes <= gpu_memory * GPU_MEMORY_SHARE]
                candidates = list({plan.key: plan for plan in on_gpu + candidates}.values())
        fitting = [plan for plan in candidates if plan.estimated_bytes <= budget]
        if fitting:
            return fitting
        plan = candidates[-1]
    else:
        plan = plan_for(index_type, count, dim, storage)
        if plan.estimated_bytes is None or plan.estimated_bytes <= budget:
            return [plan]
    smaller = "a smaller `dim`" if plan.kind == "ivfpq" else "`storage` sq8, `index_type` ivfpq or a smaller `dim`"
    raise InputError(
        f"{count:,} vectors of {dim} dims as {plan.key} need about "
        f"{format_bytes(plan.estimated_bytes)}, over the memory budget of {format_bytes(budget)} "
        f"(`max_memory`); try {smaller}", field="index_type", value=index_type
    )


def on_disk_candidates(index_type: str, count: int, dim: int, storage: str, budget: int) -> list[IndexPlan]:
    """Inverted files whose lists live on disk. `auto`: 8-bit codes while they fit the budget (they are
    what a search touches, and what stays in the page cache), then 4-bit codes, then product
    quantisation; candidates of the last two are re-scored exactly from the stored vectors. On 200k x
    384 from the fitted mixture (IVF1788, 10 candidates re-scored per hit), 4-bit codes reached
    recall@10 0.961 at nprobe 64 (8-bit, not re-scored: 0.942), PQ48 never passed 0.588 (PQ96: 0.923
    at nprobe 256): a tuning that cannot reach the target probes every list. Lists: as many as
    TRAINING_COPIES of their training sample fit the budget, up to ivf_lists."""
    trainable = budget // (TRAINING_COPIES * dim * 4) // TRAIN_POINTS_PER_LIST
    lists = max(1, min(ivf_lists(count), trainable))
    pq = plan_for("ivfpq", count, dim, lists=lists)
    if index_type == "ivf":
        plans = [plan_for("ivf", count, dim, storage, lists)]
    elif index_type == "ivfpq":
        plans = [pq]
    else:
        scalar = [plan_for("ivf", count, dim, codes, lists) for codes in ("sq8", "sq4")]
        plans = [plan for plan in scalar if plan.estimated_bytes <= budget] + [pq]
    return [replace(plan, on_disk=True) for plan in plans]


def default_memory_budget() -> int:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * DEFAULT_MEMORY_SHARE)


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """'512MB', '8G', '1.5GiB', '1000000' -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise InputError("expected a size like 512MB, 8GB or 1.5G", field="max_memory", value=text)
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
