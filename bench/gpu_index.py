"""`python -m bench.gpu_index`: `xlsearch index` of vectors already embedded, end to end, as the index
writer does it (language statistics, plan, FAISS build and tuning, margin neighbourhoods, Parquet, raw
vectors, checksums, publish), on the device `auto` picks. No embedding model: 1M x 384 vectors drawn from
the shipped mixture (bench.realistic_vectors.SHIPPED_MIXTURE), spread over 8 language labels so that the
language statistics are fitted as for a real multilingual corpus. `--device cpu` and `--count` measure
the CPU path on the same machine (at 1M it takes minutes on 16 cores: HNSW, then neighbourhoods through
it). `--max-memory SIZE`: over that budget, built shard by shard into an inverted file on disk
(engine.store.out_of_core, as `index --embeddings` builds it) from shards of `--shard-rows`, each stage
timed, the neighbourhoods (exact on a GPU) on their own line. Imports numpy, faiss, pyarrow and
xlsearch.engine only: it runs where the embedding model is not."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import RESULTS, stage_seconds
from bench.realistic_vectors import SHIPPED_MIXTURE, FittedMixture
from xlsearch.engine.ann.faiss_index import resolve_device
from xlsearch.engine.ann.index_types import parse_bytes
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.store.out_of_core import Shard, write_index_out_of_core
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.writer import Provenance, plan_index, write_index

PROVENANCE = Provenance(embedder=EmbedderSpec(backend="local", model="synthetic"), model="synthetic", family="generic",
                        prompts={"query": "{text}", "document": "{text}"}, corpora=["synthetic"],
                        chunking={"size": 512, "overlap": 64, "unit": "characters"}, skipped={})

LANGUAGES = ("en", "zh", "ja", "ko", "de", "fr", "es", "ru")


def synthetic_corpus(count: int) -> tuple[np.ndarray, pa.Table]:
    vectors = FittedMixture.load(SHIPPED_MIXTURE).draw(count)
    langs = np.array(LANGUAGES)[np.arange(count) % len(LANGUAGES)]
    meta = pa.table({"doc_id": [f"d{i}" for i in range(count)], "lang": langs, "text": [f"text {i}" for i in range(count)],
                     "source": pa.array(["synthetic"] * count), "chunk": pa.array(np.zeros(count, np.int32)),
                     "chunks": pa.array(np.ones(count, np.int32)), "start": pa.array(np.zeros(count, np.int64)),
                     "end": pa.array(np.full(count, 8, np.int64)), "extra": pa.array([""] * count)})
    return vectors, meta


def run(count: int, device: str, scratch: Path, max_memory: str | None = None, shard_rows: int = 10_000) -> dict:
    vectors, meta = synthetic_corpus(count)
    settings = IndexSettings(device=device, max_memory=parse_bytes(max_memory) if max_memory else None)
    choice = resolve_device(device)
    started = time.perf_counter()
    plans = plan_index(settings, count, vectors.shape[1], choice, out_of_core=max_memory is not None)
    ends: dict[str, float] = {}
    if plans[0].on_disk:
        def progress(done: int, total: int, stage: str) -> None:
            ends[stage] = time.perf_counter() - started  # a stage's end: its last report

        shards = (Shard(meta.slice(first, shard_rows), vectors[first:first + shard_rows], [], Counter())
                  for first in range(0, count, shard_rows))
        manifest, _ = write_index_out_of_core(scratch / "index", shards, PROVENANCE, plans, settings=settings,
                                              progress=progress, device=choice.device)
    else:
        manifest = write_index(scratch / "index", vectors, meta, PROVENANCE, plans, settings=settings, device=choice.device)
    seconds = time.perf_counter() - started
    return {"machine": platform.node(), "cores": os.cpu_count(), "count": count, "device": choice.device,
            "notice": choice.notice, "card": choice.gpu.describe() if choice.gpu else None, "seconds": round(seconds, 1),
            "max_memory": max_memory,
            "stages": stage_seconds(ends),
            "index": {k: manifest.index.get(k) for k in ("key", "device", "params", "recall@10", "below_target", "on_disk")},
            "bytes": sum(manifest.sizes.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--max-memory", help="over this budget, out of core (on-disk lists, shard by shard)")
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_index.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="xlsearch-gpu-index-"))
    try:
        result = run(args.count, args.device, scratch, args.max_memory, args.shard_rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
