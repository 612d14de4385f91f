"""Appending 1% to an index against rebuilding it (issue 16, part 3). Vectors are drawn from the shipped
mixture (bench.realistic_vectors, as bench.gpu draws its 1M), with a language of 8 each, as real
multilingual embeddings have: each language shifts its sentences by its own mean and spreads them along
its own direction, which the index's language statistics then take out. The index is what `auto`
picks (HNSW32 from 20,000 vectors), language-neutral, ranked by margin (k=4). Printed: the append's and the
rebuild's times, then how close the appended index is to the rebuilt one: the share of documents whose
neighbourhood (margin's mean cosine to the 4 nearest other documents) is within 0.002, and recall@10 of
each against exact search of its own vectors, on fresh queries. Both indexes find neighbourhoods through
an approximate index, so the share is also printed for each against exact neighbourhoods (of a sample
of SAMPLE rows): two rebuilds differ from each other about as much as they differ from exact ones.

    python -m bench.append [--count N]        # make bench --only append"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from bench.realistic_vectors import SHIPPED_MIXTURE, FittedMixture
from xlsearch.engine.ann.faiss_index import resolve_device
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.store.publish import writer_lock
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.writer import Provenance, plan_index, rewrite_index, write_index

COUNT = 100_000  # the largest a run of this and a rebuild fits in minutes on the shared 2-core machine
APPENDED = 0.01
QUERIES = 1_000
SAMPLE = 2_000  # rows whose neighbourhoods are also found exactly
LANGUAGES = ("en", "zh", "ja", "ko", "de", "fr", "ar", "ru")
LANGUAGE_SHIFT, LANGUAGE_SPREAD = 0.5, 0.3  # of a language's mean and direction, against unit sentences
NEIGHBOURHOOD_TOLERANCE = 0.002
PROVENANCE = Provenance(embedder=EmbedderSpec(backend="local", model="synthetic"), model="synthetic", family="generic",
                        prompts={}, corpora=["synthetic"], chunking={"size": 1000, "overlap": 0, "unit": "characters"},
                        skipped={})


def multilingual_vectors(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` unit vectors from the shipped mixture, each given a language (in turn) that shifts it by
    that language's mean and spreads it along that language's direction; (vectors, languages)."""
    return with_languages(FittedMixture.load(SHIPPED_MIXTURE, seed=seed).draw(count), np.random.default_rng(1000 + seed))


def with_languages(vectors: np.ndarray, rng: np.random.Generator, languages_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mixture draws given a language each, in turn (multilingual_vectors); the languages' means and
    directions drawn from `rng`, or from `languages_seed` when batches drawn apart must share them."""
    count = len(vectors)
    source = rng if languages_seed is None else np.random.default_rng(languages_seed)
    means, directions = (source.standard_normal((len(LANGUAGES), vectors.shape[1])) for _ in range(2))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    which = np.arange(count) % len(LANGUAGES)
    vectors += LANGUAGE_SHIFT * means[which] + LANGUAGE_SPREAD * rng.standard_normal((count, 1)) * directions[which]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.array(LANGUAGES)[which]


def metadata(langs: np.ndarray, first: int) -> pa.Table:
    """One single-chunk document per vector, ids from `first`."""
    count = len(langs)
    return pa.table({"doc_id": [f"d{i}" for i in range(first, first + count)], "lang": langs.tolist(),
                     "text": [f"text {i}" for i in range(first, first + count)], "source": ["synthetic"] * count,
                     "chunk": pa.array([0] * count, pa.int32()), "chunks": pa.array([1] * count, pa.int32()),
                     "start": pa.array([0] * count, pa.int64()), "end": pa.array([6] * count, pa.int64()),
                     "extra": [""] * count})


def build(directory: Path, vectors: np.ndarray, langs: np.ndarray, settings: IndexSettings) -> float:
    started = time.perf_counter()
    write_index(directory, vectors, metadata(langs, 0), PROVENANCE,
                plan_index(settings, len(vectors), vectors.shape[1], resolve_device(settings.device)), settings=settings)
    return time.perf_counter() - started


def append(directory: Path, vectors: np.ndarray, langs: np.ndarray, first: int, settings: IndexSettings) -> float:
    """Seconds to append as `xlsearch index --append` does (the index opened under the writer lock)."""
    started = time.perf_counter()
    with writer_lock(directory):
        index = IndexReader(directory)
        rewrite_index(index, np.ones(len(index), bool), vectors, metadata(langs, first), device=resolve_device(settings.device))
    return time.perf_counter() - started


def recall_at_10(index: IndexReader, queries: np.ndarray, langs: np.ndarray) -> float:
    neutral = queries if index.language_stats is None else index.language_stats.neutralize(queries, langs)
    found = index.search(neutral, 10)[1]
    exact = faiss.knn(neutral, index.vectors(), 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))


def exact_share(index: IndexReader, rows: np.ndarray) -> float:
    """Of `rows` (single-chunk documents), the share whose neighbourhood is within the tolerance of the
    exact one: the mean of their 4 best cosines to other rows."""
    vectors = index.vectors()
    scores, found = faiss.knn(vectors[rows], vectors, 5, metric=faiss.METRIC_INNER_PRODUCT)
    others = np.where(found == rows[:, None], -np.inf, scores)
    exact = -np.sort(-others, axis=1)[:, :4].mean(axis=1)
    return float((np.abs(index.neighbourhoods[rows] - exact) <= NEIGHBOURHOOD_TOLERANCE).mean())


def run(count: int = COUNT, progress=print) -> dict:
    settings = IndexSettings(device="cpu", scoring="margin")  # the tolerances are margin's neighbourhoods
    added = max(1, int(count * APPENDED))
    vectors, langs = multilingual_vectors(count + added + QUERIES)
    queries, query_langs = vectors[count + added:], langs[count + added:]
    work = Path(tempfile.mkdtemp(prefix="xlsearch-append-"))
    try:
        base_s = build(work / "appended", vectors[:count], langs[:count], settings)
        progress(f"  base index of {count:,}: built in {base_s:.1f} s")
        append_s = append(work / "appended", vectors[count:count + added], langs[count:count + added], count, settings)
        progress(f"  {added:,} appended in {append_s:.1f} s")
        rebuild_s = build(work / "rebuilt", vectors[:count + added], langs[:count + added], settings)
        progress(f"  {count + added:,} rebuilt in {rebuild_s:.1f} s")
        appended, rebuilt = IndexReader(work / "appended"), IndexReader(work / "rebuilt")
        assert len(appended.manifest.segments) == 2, "the append wrote the whole index"
        gap = np.abs(appended.neighbourhoods - rebuilt.neighbourhoods)
        recalls = [recall_at_10(index, queries, query_langs) for index in (appended, rebuilt)]
        sample = np.random.default_rng(0).choice(count + added, min(SAMPLE, count + added), replace=False)
        exact = [exact_share(index, sample) for index in (appended, rebuilt)]
        return {"count": count, "appended": added, "dim": vectors.shape[1], "key": appended.manifest.index_type,
                "append_s": round(append_s, 2), "rebuild_s": round(rebuild_s, 1), "speedup": round(rebuild_s / append_s, 1),
                "neighbourhoods_within_0.002": round(float((gap <= NEIGHBOURHOOD_TOLERANCE).mean()), 4),
                "neighbourhood_gap_max": round(float(gap.max()), 4),
                "appended_within_0.002_of_exact": round(exact[0], 4), "rebuilt_within_0.002_of_exact": round(exact[1], 4),
                "recall@10_appended": round(recalls[0], 4), "recall@10_rebuilt": round(recalls[1], 4),
                "recall@10_gap": round(abs(recalls[0] - recalls[1]), 4)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=COUNT)
    print(json.dumps(run(parser.parse_args().count), indent=2))
