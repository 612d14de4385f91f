"""`python -m bench.gpu` (`make gpu-check`): what a GPU changes for xlsearch, on the machine at hand, in under
5 minutes on one H100 or H200 with 16 cores. No embedding model: 1M x 384 vectors drawn from the shipped
mixture fitted to real embeddings (bench.realistic_vectors.SHIPPED_MIXTURE), and 1,000 fresh queries.

- the card as engine.ann.gpu's probe saw it (a GPU this faiss cannot run on is a skip with its reason,
  never an abort), and what `auto` picks with it and without it;
- IVF,Flat and IVF,SQ8 trained and filled on the GPU; IVF,Flat and HNSW32 built on the CPU: build time
  (tuning included, as `xlsearch index` builds), training sample, tuned depth and the tuning's recall@10,
  recall@10 of the fresh queries at that depth, and single-query p50 on the CPU, where queries run;
- the exact neighbourhoods (k=5) of every row on the GPU, fp32 and fp16, and their agreement; the CPU's
  time for the same, extrapolated from 2,000 rows, which also check the GPU's answers; the grouped
  search (documents of several chunks, one deeper than the GPU's k) against the CPU's;
- 2,000 queries searched exactly at once, GPU and CPU.

Each row is written to --out as soon as it is measured, so a run cut short keeps what it had. It imports
numpy, faiss, bench.realistic_vectors (numpy and faiss) and xlsearch.engine.ann only. `--quick`: small
sizes on any machine, GPU rows skipped where no GPU is usable: a smoke test whose timings mean nothing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from bench import RESULTS
from bench.realistic_vectors import SHIPPED_MIXTURE, FittedMixture
from xlsearch.engine.ann.faiss_index import DeviceChoice, build_faiss_index, per_query_recall, resolve_device, search
from xlsearch.engine.ann.gpu import carried, probe_gpu
from xlsearch.engine.ann.index_types import IndexPlan, choose_plan, plan_for
from xlsearch.engine.ann.neighbours import GPU_MAX_K, exact_neighbours, exact_search

K = 10  # recall@10, as tuning measures it
NEIGHBOURS = 5  # the exact neighbourhoods' k


@dataclass(frozen=True)
class Sizes:
    count: int  # rows indexed
    queries: int  # fresh queries for recall@10 and single-query latency
    timed: int  # of those, timed one at a time
    batch: int  # queries searched exactly at once
    cpu_rows: int  # rows whose exact neighbourhoods the CPU computes (the rest extrapolated)
    grouped: int  # rows of the grouped-search check
    long_document: int  # chunks of its longest document: deeper than the GPU's k


# The CPU's exact neighbourhoods of 2,000 rows take about 7 s on 16 cores (issue 14: about 3,500 s for all
# 1M), enough to time and to check the GPU's answers; the grouped check's CPU side is quadratic in its rows.
FULL = Sizes(count=1_000_000, queries=1_000, timed=200, batch=2_000, cpu_rows=2_000, grouped=20_000,
             long_document=GPU_MAX_K + 52)
QUICK = Sizes(count=20_000, queries=200, timed=50, batch=500, cpu_rows=500, grouped=3_000, long_document=GPU_MAX_K + 52)
DIM = 384  # the shipped mixture's, the local model's


class Report:
    """The JSON report, rewritten whole after each row."""

    def __init__(self, out: Path, header: dict) -> None:
        self.out, self.data, self.started = out, {**header, "rows": []}, time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        self.data["seconds"] = round(time.perf_counter() - self.started, 1)
        self.out.write_text(json.dumps(self.data, indent=2) + "\n")
        shown = ", ".join(f"{key} {value}" for key, value in row.items() if key != "step")
        print(f"[{self.data['seconds']:6.1f} s] {row['step']}: {shown}", flush=True)


def timed(work: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = work()
    return result, round(time.perf_counter() - started, 2)


def agreement(found: np.ndarray, expected: np.ndarray) -> float:
    """Mean share of each row's expected neighbours that were found (their order aside)."""
    hits = (found[:, :, None] == expected[:, None, :]) & (expected[:, None, :] >= 0)
    return round(float(hits.any(axis=1).sum(axis=1).mean() / expected.shape[1]), 4)


def build_row(plan: IndexPlan, device: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
              sizes: Sizes) -> dict:
    """One plan built as `xlsearch index` builds it, then searched at its tuned depth."""
    built, seconds = timed(lambda: build_faiss_index(plan, base, device))
    params = built.tuning["params"]

    def found(rows: np.ndarray) -> np.ndarray:
        return search(built.index, rows, K, params, exact_vectors=lambda ids: base[ids])[1]

    latencies = []
    for query in queries[:sizes.timed]:
        started = time.perf_counter()
        found(query[None, :])
        latencies.append(time.perf_counter() - started)
    return {"step": f"build {plan.key}", "device": built.device, "build_s": seconds, "trained_on": built.trained_on,
            "params": params, "tuned_recall@10": built.tuning["recall@10"], "below_target": built.below_target,
            "recall@10": round(float(per_query_recall(found(queries), truth).mean()), 4),
            "p50_ms": round(float(np.median(latencies)) * 1000, 3)}


def grouped_labels(count: int, long_document: int, seed: int = 0) -> np.ndarray:
    """Document labels for `count` rows: one document of `long_document` chunks, the rest of 1 to 8."""
    rng = np.random.default_rng(seed)
    sizes = [long_document]
    while sum(sizes) < count:
        sizes.append(int(rng.integers(1, 9)))
    labels = np.repeat(np.arange(len(sizes)), sizes)[:count]
    return labels[rng.permutation(count)]  # a document's chunks need not be neighbours in storage


def run(sizes: Sizes, out: Path) -> dict:
    choice: DeviceChoice = resolve_device("auto")
    gpu = choice.gpu
    gpu_memory = gpu.memory if gpu is not None else None
    unusable = None if gpu is not None else probe_gpu().reason
    skipped = {"skipped": "no usable GPU"}
    lists_plan, sq8_plan, hnsw_plan = (plan_for("ivf", sizes.count, DIM), plan_for("ivf", sizes.count, DIM, "sq8"),
                                       plan_for("hnsw", sizes.count, DIM))
    report = Report(out, {
        "machine": platform.node(), "cores": os.cpu_count(), "faiss": faiss.__version__, "quick": sizes is QUICK,
        "count": sizes.count, "dim": DIM, "vectors": f"drawn from {SHIPPED_MIXTURE.name}",
        "card": None if gpu is None else {"name": gpu.name, "capability": gpu.capability, "memory_gb": round(gpu.memory / 2**30, 1),
                                          "driver": gpu.driver, "faiss_code": carried(gpu.kernels)},
        "device": choice.device, "gpu_unusable": unusable,
        "auto": {"with_gpu": choose_plan("auto", sizes.count, DIM, gpu_memory=gpu_memory).key if gpu else None,
                 "cpu_only": choose_plan("auto", sizes.count, DIM).key}})
    mixture = FittedMixture.load(SHIPPED_MIXTURE)
    (base, queries, batch), seconds = timed(lambda: (mixture.draw(sizes.count), mixture.draw(sizes.queries),
                                                     mixture.draw(sizes.batch)))
    truth, truth_s = timed(lambda: exact_search(queries, base, K, choice.device)[1])
    report.add({"step": "vectors", "draw_s": seconds, "truth_s": truth_s, "truth_device": choice.device})

    if gpu is None:
        for plan in (lists_plan, sq8_plan):
            report.add({"step": f"build {plan.key}", "device": "gpu", **skipped})
        for step in ("neighbourhoods fp32", "neighbourhoods fp16", "grouped neighbourhoods", "batch queries"):
            report.add({"step": step, "device": "gpu", **skipped})
    else:
        for plan in (lists_plan, sq8_plan):
            report.add(build_row(plan, "gpu", base, queries, truth, sizes))
        (exact32, rows32), fp32_s = timed(lambda: exact_neighbours(base, NEIGHBOURS, "gpu", half=False))
        report.add({"step": "neighbourhoods fp32", "device": "gpu", "seconds": fp32_s})
        (exact16, rows16), fp16_s = timed(lambda: exact_neighbours(base, NEIGHBOURS, "gpu", half=True))
        report.add({"step": "neighbourhoods fp16", "device": "gpu", "seconds": fp16_s,
                    "agreement_with_fp32": agreement(rows16, rows32),
                    "max_score_change": float(np.abs(exact16 - exact32).max()),
                    "max_mean_change": float(np.abs(exact16.mean(axis=1) - exact32.mean(axis=1)).max())})
        labels = grouped_labels(sizes.grouped, sizes.long_document)
        subset = base[:sizes.grouped]
        (_, grouped_gpu), grouped_s = timed(lambda: exact_neighbours(subset, NEIGHBOURS, "gpu", labels, half=False))
        grouped_cpu = exact_neighbours(subset, NEIGHBOURS, "cpu", labels)[1]
        report.add({"step": "grouped neighbourhoods", "device": "gpu", "rows": sizes.grouped, "seconds": grouped_s,
                    "longest_document": sizes.long_document, "agreement_with_cpu": agreement(grouped_gpu, grouped_cpu)})
        (_, batch_rows), batch_s = timed(lambda: exact_search(batch, base, K, "gpu"))
        report.add({"step": "batch queries", "device": "gpu", "queries": sizes.batch, "seconds": batch_s})

    # The CPU's exact neighbourhoods: cpu_rows rows (against all), timed and scaled to every row; their
    # answers check the GPU's fp32 ones.
    (_, cpu_rows), cpu_s = timed(lambda: exact_search(base[:sizes.cpu_rows], base, NEIGHBOURS + 1, "cpu"))
    row = {"step": "neighbourhoods", "device": "cpu", "rows": sizes.cpu_rows, "seconds": cpu_s,
           "all_rows_s": round(cpu_s * sizes.count / sizes.cpu_rows, 1)}
    if gpu is not None:
        row["gpu_fp32_agreement"] = agreement(rows32[:sizes.cpu_rows], cpu_rows[:, 1:])  # the CPU's include the row
    report.add(row)
    cpu_batch, cpu_batch_s = timed(lambda: exact_search(batch, base, K, "cpu")[1])
    row = {"step": "batch queries", "device": "cpu", "queries": sizes.batch, "seconds": cpu_batch_s}
    if gpu is not None:
        row["gpu_agreement"] = agreement(batch_rows, cpu_batch)
    report.add(row)
    for plan in (lists_plan, hnsw_plan):
        report.add(build_row(plan, "cpu", base, queries, truth, sizes))
    return report.data


def summary(data: dict) -> str:
    """The table: one line per row, the measure that matters first."""
    lines = [f"card: {data['card']['name'] if data['card'] else 'none usable'}"
             + (f" ({data['card']['capability']}, {data['card']['memory_gb']} GB; faiss {data['faiss']}: "
                f"{data['card']['faiss_code']})" if data["card"] else f": {data['gpu_unusable']}"),
             f"{data['count']:,} x {data['dim']} from {SHIPPED_MIXTURE.name}, {data['cores']} cores; auto picks "
             f"{data['auto']['with_gpu'] or '-'} with the GPU, {data['auto']['cpu_only']} without",
             f"{'step':<28}{'device':<8}{'seconds':>9}  detail"]
    for row in data["rows"][1:]:
        seconds = row.get("build_s", row.get("seconds", ""))
        detail = row.get("skipped") or ", ".join(f"{key} {value}" for key, value in row.items()
                                                 if key not in ("step", "device", "build_s", "seconds"))
        lines.append(f"{row['step']:<28}{row['device']:<8}{seconds:>9}  {detail}")
    lines.append(f"total {data['seconds']} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test on any machine")
    parser.add_argument("--out", type=Path, help="the JSON report (default bench/results/gpu.json, gpu-quick.json)")
    args = parser.parse_args()
    out = args.out or RESULTS / ("gpu-quick.json" if args.quick else "gpu.json")
    data = run(QUICK if args.quick else FULL, out)
    print(summary(data))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
