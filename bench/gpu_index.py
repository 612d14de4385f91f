"""`python -m bench.gpu_index`: `xlsearch index` of vectors already embedded, end to end, as the index
writer does it (language statistics, plan, FAISS build and tuning, margin neighbourhoods, Parquet, raw
vectors, checksums, publish), on the device `auto` picks. No embedding model: 1M x 384 vectors drawn from
the shipped mixture (bench.realistic_vectors.SHIPPED_MIXTURE) in 8 languages (bench.append.with_languages),
so that the language statistics are fitted as for a real multilingual corpus. `--device cpu` and `--count` measure
the CPU path on the same machine (at 1M it takes minutes on 16 cores: HNSW, then neighbourhoods through
it). `--max-memory SIZE`: over that budget, built shard by shard into an inverted file on disk
(engine.store.out_of_core, as `index --embeddings` builds it) from shards of `--shard-rows`, each stage
timed, the neighbourhoods (exact on a GPU) on their own line. `--append`: then 1% more rows appended (as
`index --append` adds them) and the same rows built again at once: both times, and the share of rows
whose neighbourhoods agree within bench.append's tolerance (issue 16). Imports numpy, faiss, pyarrow and
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
from bench.append import APPENDED, NEIGHBOURHOOD_TOLERANCE, QUERIES, append, metadata, recall_at_10, with_languages
from bench.realistic_vectors import SHIPPED_MIXTURE, FittedMixture
from xlsearch.engine.ann.faiss_index import DeviceChoice, resolve_device
from xlsearch.engine.ann.index_types import parse_bytes
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.store.manifest import Manifest
from xlsearch.engine.store.out_of_core import Shard, write_index_out_of_core
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.writer import Provenance, plan_index, write_index

PROVENANCE = Provenance(embedder=EmbedderSpec(backend="local", model="synthetic"), model="synthetic", family="generic",
                        prompts={"query": "{text}", "document": "{text}"}, corpora=["synthetic"],
                        chunking={"size": 512, "overlap": 64, "unit": "characters"}, skipped={})

LANGUAGES_SEED = 1000  # the languages' means and directions, as bench.out_of_core's shards draw them


def synthetic_corpus(count: int) -> tuple[np.ndarray, pa.Table]:
    """`count` single-chunk documents from the shipped mixture, each given a language in turn (bench.append's:
    shifted by its mean and spread along its direction, which language statistics take out)."""
    vectors, langs = with_languages(FittedMixture.load(SHIPPED_MIXTURE).draw(count), np.random.default_rng(0),
                                    LANGUAGES_SEED)
    return vectors, metadata(langs, 0)


def run(count: int, device: str, scratch: Path, max_memory: str | None = None, shard_rows: int = 10_000,
        with_append: bool = False) -> dict:
    added = max(1, int(count * APPENDED)) if with_append else 0
    vectors, meta = synthetic_corpus(count + added + (QUERIES if with_append else 0))
    settings = IndexSettings(device=device, max_memory=parse_bytes(max_memory) if max_memory else None)
    choice = resolve_device(device)
    manifest, seconds, stages = _built(scratch / "index", vectors[:count], meta.slice(0, count), settings, choice, shard_rows)
    result = {"machine": platform.node(), "cores": os.cpu_count(), "count": count, "device": choice.device,
              "notice": choice.notice, "card": choice.gpu.describe() if choice.gpu else None, "seconds": seconds,
              "max_memory": max_memory, "stages": stages,
              "index": {k: manifest.index.get(k) for k in ("key", "device", "params", "recall@10", "below_target", "on_disk")},
              "bytes": sum(manifest.sizes.values())}
    if with_append:
        result["append"] = _appended_against_rebuilt(scratch, vectors, meta, count, added, settings, choice, shard_rows)
    return result


def _built(directory: Path, vectors: np.ndarray, meta: pa.Table, settings: IndexSettings, choice: DeviceChoice,
           shard_rows: int) -> tuple[Manifest, float, dict]:
    """A whole index of `vectors`, out of core when over the budget: its manifest, seconds and stages."""
    started = time.perf_counter()
    plans = plan_index(settings, len(vectors), vectors.shape[1], choice, out_of_core=settings.max_memory is not None)
    ends: dict[str, float] = {}
    if plans[0].on_disk:
        def progress(done: int, total: int, stage: str) -> None:
            ends[stage] = time.perf_counter() - started  # a stage's end: its last report

        shards = (Shard(meta.slice(first, shard_rows), vectors[first:first + shard_rows], [], Counter())
                  for first in range(0, len(vectors), shard_rows))
        manifest, _ = write_index_out_of_core(directory, shards, PROVENANCE, plans, settings=settings,
                                              progress=progress, device=choice.device)
    else:
        manifest = write_index(directory, vectors, meta, PROVENANCE, plans, settings=settings, device=choice.device)
    return manifest, round(time.perf_counter() - started, 1), stage_seconds(ends)


def _appended_against_rebuilt(scratch: Path, vectors: np.ndarray, meta: pa.Table, count: int, added: int,
                              settings: IndexSettings, choice: DeviceChoice, shard_rows: int) -> dict:
    """`added` rows appended to the index of the first `count` (as `index --append` adds them), against the
    same rows built at once: times, neighbourhoods within bench.append's tolerance, recall@10 of each on
    the rows after them as queries."""
    rows = count + added
    langs = meta.column("lang").to_numpy(zero_copy_only=False)
    append_s = append(scratch / "index", vectors[count:rows], langs[count:rows], count, settings)
    _, rebuild_s, _ = _built(scratch / "rebuilt", vectors[:rows], meta.slice(0, rows), settings, choice, shard_rows)
    appended, rebuilt = IndexReader(scratch / "index"), IndexReader(scratch / "rebuilt")
    assert appended.manifest.built_rows == count, "the append wrote the whole index"
    gap = np.abs(appended.neighbourhoods - rebuilt.neighbourhoods)
    recalls = [recall_at_10(index, vectors[rows:], langs[rows:]) for index in (appended, rebuilt)]
    return {"appended": added, "append_s": round(append_s, 1), "rebuild_s": rebuild_s,
            "speedup": round(rebuild_s / append_s, 1),
            "neighbourhoods_within_0.002": round(float((gap <= NEIGHBOURHOOD_TOLERANCE).mean()), 4),
            "neighbourhood_gap_max": round(float(gap.max()), 4),
            "recall@10_appended": round(recalls[0], 4), "recall@10_rebuilt": round(recalls[1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--max-memory", help="over this budget, out of core (on-disk lists, shard by shard)")
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--append", action="store_true", help="then append 1%% and build the same rows again")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_index.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="xlsearch-gpu-index-"))
    try:
        result = run(args.count, args.device, scratch, args.max_memory, args.shard_rows, args.append)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
