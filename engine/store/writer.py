"""Writing an index version: each step writes one file into a staging directory beside the index, and
the whole directory is swapped in at the end (engine.store.publish), so a failure at any step leaves the
previous version as it was. A full write (write_index) fits, trains and computes everything; an update
of an open index (rewrite_index) adds to what is there where engine.store.incremental can, else writes
the whole index again."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from xlsearch.engine.ann.faiss_index import (BuiltIndex, DeviceChoice, build_first_reaching, neighbourhood_params,
                                             resolve_device, search)
from xlsearch.engine.ann.index_types import IndexPlan, plan_candidates
from xlsearch.engine.ann.neighbours import exact_neighbours
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.ranking.margin import other_document_neighbours
from xlsearch.engine.ranking.neighbourhoods import neighbour_depth
from xlsearch.engine.ranking.neutral import LanguageStats
from xlsearch.engine.store.files import INDEX_FILE
from xlsearch.engine.store.incremental import update_in_place
from xlsearch.engine.store.out_of_core import Shard, document_keys, write_index_out_of_core
from xlsearch.engine.store.manifest import Manifest, index_manifest, write_manifest
from xlsearch.engine.store.publish import crash_point, staged_version
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.segments import write_neighbours, write_rejects, write_segment
from xlsearch.engine.store.settings import IndexSettings


@dataclass(frozen=True)
class Provenance:
    """What a version's vectors came from, as opposed to what the writer derives from the data."""

    embedder: EmbedderSpec  # resolved: the model as served
    model: str
    family: str
    prompts: dict[str, str]
    corpora: list[str]
    chunking: dict
    skipped: dict[str, int]


def plan_index(settings: IndexSettings, count: int, dim: int, device: DeviceChoice,
               out_of_core: bool = False) -> list[IndexPlan]:
    """The one place index types are chosen: from the number of vectors (chunks) the index will hold and
    the device that builds it. The first is the plan; the others are tried in turn when tuning cannot
    reach the recall target. Over the memory budget: InputError, before anything is embedded. With
    `out_of_core`, the vectors are read a shard at a time, and may be over the budget (on-disk lists)."""
    gpu_memory = device.gpu.memory if device.device == "gpu" and device.gpu is not None else None
    return plan_candidates(settings.index_type, count, dim, settings.storage, settings.max_memory, gpu_memory,
                           out_of_core)


def write_index(directory: Path, vectors: np.ndarray, meta: pa.Table, provenance: Provenance,
                plans: list[IndexPlan], settings: IndexSettings = IndexSettings(), rejects: list[dict] | None = None,
                device: str = "cpu") -> Manifest:
    """Write a whole index version with the first of `plans` that reaches the recall target (plan_index),
    on `device` (resolve_device's), and return its manifest. `vectors` are the raw unit
    vectors, one per row of `meta` (at least `doc_id`, `lang`, `text`, `source`). With
    `settings.language_neutral` and two or more languages with enough documents to fit
    (LanguageStats.fit), FAISS holds the language-neutral vectors; the raw ones are kept beside. With
    margin scoring, each row's neighbourhood is computed here, once."""
    directory = Path(directory)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rejects = rejects or []
    with staged_version(directory) as staging:
        langs = np.asarray(meta.column("lang").to_pylist())
        stats = _write_language_stats(staging, vectors, langs, meta.column("doc_id"), settings)
        searchable = vectors if stats is None else stats.neutralize(vectors, langs)
        built = _write_faiss_index(staging, plans, searchable, device)
        if settings.uses_neighbourhoods:
            _write_neighbourhoods(staging, built, searchable, meta, settings.scoring)
        segment, meta = write_segment(staging, 0, meta, vectors, first_row=0)
        write_rejects(staging, rejects)
        documents = len(set(meta.column("doc_id").to_pylist()))
        manifest = index_manifest(staging, provenance, built, settings, documents, len(meta), Counter(langs.tolist()),
                                  stats, len(rejects), [segment], settings.uses_neighbourhoods and built.device == "gpu")
        write_manifest(staging, manifest)
    return manifest


def _write_language_stats(staging: Path, vectors: np.ndarray, langs: np.ndarray, doc_ids: pa.ChunkedArray,
                          settings: IndexSettings) -> LanguageStats | None:
    """Statistics fitted on statistics_sample's rows by document key, as the out-of-core writer fits them."""
    stats = LanguageStats.fit(vectors, langs, document_keys(doc_ids)) if settings.language_neutral else None
    if stats is not None:
        stats.save(staging)
    return stats


def _write_faiss_index(staging: Path, plans: list[IndexPlan], searchable: np.ndarray, device: str) -> BuiltIndex:
    built = build_first_reaching(plans, searchable, device)
    try:
        faiss.write_index(built.index, str(staging / INDEX_FILE))
    except RuntimeError as exc:  # faiss reports a failed write (disk full, too large) this way
        raise OSError(str(exc).strip().splitlines()[-1]) from None
    crash_point("faiss")
    return built


def _write_neighbourhoods(staging: Path, built: BuiltIndex, searchable: np.ndarray, meta: pa.Table,
                          scoring: str) -> None:
    """Each row's margin neighbourhood under `scoring`: its nearest rows of other documents found exactly on
    the GPU (1M rows in seconds there), through the index on the CPU at the depth tuned for them
    (faiss_index.neighbourhood_tuning; an exact scan of 1M rows would take an hour on 16 cores)."""
    doc_ids = np.asarray(meta.column("doc_id").to_pylist(), dtype=object)
    depth = neighbour_depth(scoring)
    if built.device == "gpu":
        scores, rows = exact_neighbours(searchable, depth, "gpu", groups=doc_ids)
    else:
        def tuned_search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return search(built.index, queries, k, neighbourhood_params(built.tuning), exact_vectors=lambda rows: searchable[rows])

        codes = np.unique(doc_ids, return_inverse=True)[1].ravel()
        scores, rows = other_document_neighbours(tuned_search, searchable, codes, depth)
    write_neighbours(staging, scores, rows, scoring, meta.column("lang").to_pylist())


def provenance_of(index: IndexReader, **changes) -> Provenance:
    """An open index's provenance, to write a new version of it."""
    m = index.manifest
    current = Provenance(embedder=m.embedder, model=m.model, family=m.family, prompts=m.prompts, corpora=m.corpora,
                         chunking=m.chunking, skipped=m.skipped)
    return replace(current, **changes)


def rewrite_index(index: IndexReader, keep: np.ndarray, vectors: np.ndarray | None = None,
                  meta: pa.Table | None = None, rejects: list[dict] | None = None,
                  plans: list[IndexPlan] | None = None, provenance: Provenance | None = None,
                  device: DeviceChoice | None = None) -> Manifest:
    """A new version of an open index (opened under the writer lock): its rows where `keep` (by position)
    is true, then `vectors`/`meta` appended, and `rejects` added to its list. Nothing is re-embedded.
    Where engine.store.incremental.update_in_place can, the change is added to what is there (its cost
    follows the change); otherwise everything is written again from the raw vectors: language statistics
    fitted again, the index type chosen for the rows it will hold (without `plans`), trained and tuned."""
    device = device or resolve_device(index.settings.device)
    on_disk = bool(index.manifest.index.get("on_disk"))
    count = int(keep.sum()) + (0 if vectors is None else len(vectors))
    plans = plans or plan_index(index.settings, count, index.dim, device, out_of_core=on_disk)
    updated = update_in_place(index, keep, vectors, meta, rejects or [], plans[0], provenance or provenance_of(index),
                              device.device)
    if updated is not None:
        return updated
    all_rejects = index.rejects() + (rejects or [])
    if plans[0].on_disk:  # a segment at a time, as it was built
        shards = _kept_segments(index, keep, all_rejects)
        if vectors is not None:
            shards = itertools.chain(shards, [Shard(meta.cast(index.meta_schema), vectors, [], Counter())])
        return write_index_out_of_core(index.directory, shards, provenance or provenance_of(index), plans,
                                       settings=index.settings, device=device.device)[0]
    kept_vectors = np.asarray(index.raw_vectors())[keep]
    kept_meta = index.table().filter(pa.array(keep))
    if vectors is not None:
        kept_vectors = np.vstack([kept_vectors, vectors])
        kept_meta = pa.concat_tables([kept_meta, meta.cast(kept_meta.schema)])
    return write_index(index.directory, kept_vectors, kept_meta, provenance or provenance_of(index), plans,
                       settings=index.settings, rejects=all_rejects, device=device.device)


def _kept_segments(index: IndexReader, keep: np.ndarray, rejects: list[dict]) -> Iterator[Shard]:
    """The rows of `index` where `keep` (by position) is true, a segment at a time; `rejects` with the first."""
    kept_rows = np.zeros(index.rows_stored, bool)
    kept_rows[index.row_of(np.flatnonzero(keep))] = True
    starts = np.cumsum([0] + [segment["rows"] for segment in index.manifest.segments])
    for number, segment in enumerate(index.manifest.segments):
        rows = np.flatnonzero(kept_rows[starts[number]:starts[number + 1]])
        yield Shard(index.segment_table(number).take(pa.array(rows)), index.row_vectors(rows + starts[number]),
                    rejects if number == 0 else [], Counter())
