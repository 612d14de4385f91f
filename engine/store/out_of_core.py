"""Writing an index version from shards of rows that together need not fit in memory (`index --embeddings`
when the vectors are over the memory budget): memory follows one shard, the training sample and the
per-row arrays (neighbours: 12 bytes per row and neighbour), never the whole corpus.

1. Each shard becomes a segment of the version as it is read (its metadata and raw vectors), so the
   index keeps its own copy of what it serves and a later `embed` into the same directory changes nothing
   of it.
2. Language statistics are fitted on the rows neutral.statistics_sample draws by document (about
   SAMPLE_ROWS_PER_LANGUAGE of each language), and the inverted file trained on the rows
   faiss_index.training_rows draws: the rows an in-memory build of the same vectors draws for both.
3. Each segment's rows are added to an empty copy of the trained index, a partial index written to
   staging; the partial indexes' lists are merged, in order, into one file of lists on disk
   (engine.ann.on_disk). Rows are numbered as the in-memory build numbers them, and each list holds its
   rows in the same order, so the two indexes answer alike.
4. The search depth is tuned as the in-memory build tunes it: the last rows are the queries, kept out of
   reach by a selector rather than added last, their exact neighbours found a segment at a time.
5. Neighbourhoods are searched a segment at a time against the whole index (stopes' warning: a shard's
   own neighbours would change the margins), at the depth tuned for them (faiss_index.neighbourhood_tuning,
   step 4's queries): the values the in-memory build gives
   for the same vectors and the same index. A batch of rows is searched by scanning the inverted lists
   (engine.ann.list_scan, FAISS's candidates) where a sixteenth of the memory budget holds enough rows.
   On a GPU they are exact, as the in-memory build's are there
   (engine.ann.neighbours.exact_neighbours_streamed: the rows held on the GPU, searched by every segment).

Steps 3 and 5 go a segment at a time through a SegmentRunner: InProcess here, or Ray tasks
(indexer.ray_index), which hand back the same partial indexes and neighbourhoods; step 5 on a GPU runs in
this process, on its GPU."""

from __future__ import annotations

import hashlib
import mmap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
import pyarrow as pa

from xlsearch.engine.ann.faiss_index import (RERANK_FACTOR, TARGET_RECALL, TUNING_K, BuiltIndex, held_out_count,
                                             is_lossy, neighbourhood_params, new_index, search, training_rows,
                                             tuned_against)
from xlsearch.engine.ann.index_types import IndexPlan, default_memory_budget
from xlsearch.engine.ann.list_scan import scan_batch
from xlsearch.engine.ann.neighbours import exact_neighbours_streamed
from xlsearch.engine.errors import InputError
from xlsearch.engine.ann.on_disk import Block, lists_file_of, merged_on_disk, open_on_disk, partial_of, release_pages
from xlsearch.engine.ranking.margin import SELF_SEARCH_BATCH, other_document_neighbours, search_depth
from xlsearch.engine.ranking.neighbourhoods import neighbour_depth
from xlsearch.engine.ranking.neutral import LanguageStats, statistics_sample
from xlsearch.engine.store.files import INDEX_FILE
from xlsearch.engine.store.manifest import Manifest, index_manifest, write_manifest
from xlsearch.engine.store.publish import crash_point, staged_version
from xlsearch.engine.store.segments import write_neighbours, write_rejects, write_segment
from xlsearch.engine.store.settings import IndexSettings

LISTS_FILE = lists_file_of(Path(INDEX_FILE)).name
# Of --max-memory, what the neighbourhood search's batches may take. 1M rows at --max-memory 256MB peaked
# at 768 MB (its bound) searching 1,024 rows a call through FAISS, and at 787 MB scanning the lists for
# 10,000 (IVF910,SQ4, 90 candidates a row: about 3.3 KB a row): a sixteenth keeps that budget on FAISS's
# search, and gives 1GB's IVF3640,SQ8 at nprobe 288 about 6,800 rows a scan and 2GB's 5M index 10,000.
NEIGHBOUR_MEMORY_SHARE = 1 / 16
FAISS_SEARCH_BATCH = 1024
# The neighbourhood step scans lists only where its share holds this many rows a call: a scan holds about
# 45 MB beyond what scan_batch counts (each thread's decoded list and BLAS's buffers). 1M at 256MB
# scanning 1,350 rows a call peaked at 813 MB, its bound 768, against 762 through FAISS's search of 1,024,
# at the same rate (476 and 488 rows/s over their first rows: re-scoring 90 candidates a row from the
# shards weighs as much as the search there).
NEIGHBOUR_SCAN_ROWS = 4096

Progress = Callable[[int, int, str], None]  # (done, total, stage)


@dataclass
class Shard:
    """One shard's rows as the writer takes them, and what was left out of it."""

    meta: pa.Table  # at least doc_id, lang, text, source
    vectors: np.ndarray  # raw unit vectors, one per row of meta
    rejects: list[dict]  # inputs the embedding server refused
    skipped: Counter  # rows left out, by reason
    doc_keys: np.ndarray | None = None  # document_keys of meta's doc_id, where the reader has them already


class StagedRows:
    """The rows written so far, a segment per shard: raw vectors memory-mapped, per-row language and
    document codes in memory (a few bytes a row)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.segments: list[dict] = []
        self._raw: list[np.memmap] = []
        self._starts = [0]
        self._langs: list[pa.Array] = []
        self._doc_keys: list[np.ndarray] = []
        self.stats: LanguageStats | None = None

    @classmethod
    def reopened(cls, staging: Path, segments: Iterable[dict], stats: LanguageStats | None) -> StagedRows:
        """The vectors of `segments` written in `staging` (by another process), for raw and searchable
        gathers; without the rows' languages and documents, which the caller has."""
        rows = cls(staging)
        rows.stats = stats
        for segment in segments:
            rows.segments.append(segment)
            rows._raw.append(np.load(staging / segment["vectors"], mmap_mode="r", allow_pickle=False))
            rows._starts.append(rows._starts[-1] + segment["rows"])
        return rows

    def add(self, meta: pa.Table, vectors: np.ndarray, doc_keys: np.ndarray | None = None) -> None:
        number = len(self.segments)
        segment, _ = write_segment(self.staging, number, meta, vectors, self._starts[-1])
        self.segments.append(segment)
        self._raw.append(np.load(self.staging / segment["vectors"], mmap_mode="r", allow_pickle=False))
        self._starts.append(self._starts[-1] + len(meta))
        self._langs.append(meta.column("lang").combine_chunks().dictionary_encode())
        self._doc_keys.append(document_keys(meta.column("doc_id")) if doc_keys is None else doc_keys)

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def dim(self) -> int:
        return self._raw[0].shape[1]

    def langs(self) -> np.ndarray:
        """Each row's language, as strings (3 letters: 4 bytes x 3 a row)."""
        return np.concatenate([np.asarray(part.dictionary.to_pylist(), dtype=str)[part.indices.to_numpy()]
                               for part in self._langs])

    def language_counts(self) -> Counter:
        """Rows per language, counted on the segments' dictionary codes (counting a list of every row's
        language as Python strings raised the peak RSS by 149 MB on 5M rows, measured alone)."""
        counts: Counter = Counter()
        for part in self._langs:
            found = np.bincount(part.indices.to_numpy(), minlength=len(part.dictionary))
            counts.update({lang: int(n) for lang, n in zip(part.dictionary.to_pylist(), found) if n})
        return counts

    def doc_keys(self) -> np.ndarray:
        """Each row's document_keys key."""
        return np.concatenate(self._doc_keys)

    def doc_codes(self) -> np.ndarray:
        """Each row's document numbered 0.. (equal for the chunks of one document)."""
        return np.unique(self.doc_keys(), return_inverse=True)[1].ravel()

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """The raw vectors of `rows` (row numbers, any order), gathered into memory."""
        rows = np.asarray(rows, dtype=np.int64)
        result = np.empty((len(rows), self.dim), np.float32)
        segment = np.searchsorted(self._starts, rows, side="right") - 1
        for number in np.unique(segment):
            at = np.flatnonzero(segment == number)
            result[at] = self._raw[number][rows[at] - self._starts[number]]
            _release(self._raw[number])
        return result

    def searchable(self, rows: np.ndarray, langs: np.ndarray) -> np.ndarray:
        """The vectors FAISS holds for `rows` (`langs`: every row's language)."""
        raw = self.raw(rows)
        return raw if self.stats is None else self.stats.neutralize(raw, langs[rows])

    def segment_searchable(self, number: int, langs: np.ndarray) -> np.ndarray:
        first, stop = self._starts[number], self._starts[number + 1]
        raw = np.array(self._raw[number], dtype=np.float32)
        _release(self._raw[number])
        return raw if self.stats is None else self.stats.neutralize(raw, langs[first:stop])

    def first_row(self, number: int) -> int:
        return self._starts[number]


@dataclass(frozen=True)
class NeighbourJob:
    """What the neighbourhood search of any segment needs, for a worker too: the staged index and
    segments, read by path (a worker on another node needs that path on a shared file system), and the
    per-row arrays of the whole index (languages: 12 bytes a row, documents: 8)."""

    staging: Path
    segments: tuple[dict, ...]
    stats: LanguageStats | None
    langs: np.ndarray
    doc_codes: np.ndarray
    params: dict  # the search depth tuned for neighbourhoods
    depth: int  # neighbours a row
    batch: int  # rows a search call (neighbour_batch)

    def opened(self) -> tuple[faiss.Index, StagedRows]:
        """The staged index (lists mapped read-only) and its rows' vectors, opened in this process."""
        return open_on_disk(self.staging / INDEX_FILE), StagedRows.reopened(self.staging, self.segments, self.stats)


def segment_neighbours(job: NeighbourJob, index: faiss.Index, rows: StagedRows, number: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment `number`'s rows' nearest rows of other documents through the whole index (job.opened())."""
    def tuned_search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search(index, queries, k, job.params, exact_vectors=lambda found: rows.searchable(found, job.langs))

    return other_document_neighbours(tuned_search, rows.segment_searchable(number, job.langs), job.doc_codes, job.depth,
                                     first_row=rows.first_row(number), batch=job.batch)


def neighbour_batch(budget: int, dim: int, doc_codes: np.ndarray, depth: int, params: dict) -> int:
    """Rows a neighbourhood search call takes under a memory `budget` (--max-memory): scanned list by
    list (list_scan) in batches within NEIGHBOUR_MEMORY_SHARE of it, as large as SELF_SEARCH_BATCH;
    FAISS_SEARCH_BATCH through FAISS's search where that share holds fewer than NEIGHBOUR_SCAN_ROWS. A row
    asks for search_depth(doc_codes, depth) candidates, times the re-scoring factor of `params`."""
    wanted = search_depth(doc_codes, depth) * int(params.get("rerank", 1))
    scanned = scan_batch(int(budget * NEIGHBOUR_MEMORY_SHARE), dim, wanted, int(params.get("nprobe") or 1))
    return min(scanned, SELF_SEARCH_BATCH) if scanned >= NEIGHBOUR_SCAN_ROWS else FAISS_SEARCH_BATCH


class SegmentRunner(Protocol):
    """Where the steps that go a segment at a time run: the partial indexes and the neighbourhoods, each
    segment's result handed back in segment order."""

    def partials(self, trained: faiss.Index, blocks: Iterable[Block]) -> Iterator[np.ndarray]: ...

    def neighbourhoods(self, job: NeighbourJob) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


class InProcess:
    """Both steps in this process, a segment after another (FAISS's threads share each one out)."""

    def partials(self, trained: faiss.Index, blocks: Iterable[Block]) -> Iterator[np.ndarray]:
        for first, vectors in blocks:
            yield partial_of(trained, first, vectors)

    def neighbourhoods(self, job: NeighbourJob) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        index, rows = job.opened()
        for number in range(len(job.segments)):
            yield segment_neighbours(job, index, rows, number)


def document_keys(doc_ids: pa.ChunkedArray) -> np.ndarray:
    """A 64-bit key per document id (blake2b): equal ids, equal keys; distinct ids collide with odds of
    about 1e-6 among 5M ids. A key array costs 8 bytes a row, a set of the ids about 80."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
                        for doc_id in doc_ids.to_pylist()), dtype=np.int64, count=len(doc_ids))


def _release(array: np.memmap) -> None:
    """Gathered rows (training sample, re-scoring, tuning) are read from memory-mapped segments: let the
    pages of a memory-mapped array go from this process' resident memory (they stay in the
    page cache, shared)."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)


def write_index_out_of_core(directory: Path, shards: Iterable[Shard], provenance, plans: list[IndexPlan],
                            settings: IndexSettings = IndexSettings(), progress: Progress | None = None,
                            runner: SegmentRunner = InProcess(), device: str = "cpu") -> tuple[Manifest, list[dict]]:
    """A whole index version from `shards`, read one at a time, with the first of `plans` (on-disk
    inverted files) that reaches the recall target (module docstring); `runner` runs the steps that go a
    segment at a time (in this process by default); on `device` "gpu" (resolve_device's), neighbourhoods
    are exact, on the GPU. Returns its manifest and the shards' rejects."""
    rejects, skipped = [], Counter(provenance.skipped)
    with staged_version(Path(directory)) as staging:
        rows = StagedRows(staging)
        for shard in shards:
            rows.add(shard.meta, shard.vectors, shard.doc_keys)
            rejects += shard.rejects
            skipped.update(shard.skipped)
            if progress:
                progress(len(rows), len(rows), "reading shards")
        if not len(rows):
            raise InputError("no vectors in the shards", field="embeddings")
        langs = rows.langs()
        rows.stats = _language_stats(rows, langs, settings)
        if rows.stats is not None:
            rows.stats.save(staging)
        built = _built_on_disk(staging, plans, rows, langs, runner, progress)
        doc_codes = rows.doc_codes()
        if settings.uses_neighbourhoods:
            params, depth = neighbourhood_params(built.tuning), neighbour_depth(settings.scoring)
            batch = neighbour_batch(settings.max_memory or default_memory_budget(), rows.dim, doc_codes, depth, params)
            job = NeighbourJob(staging, tuple(rows.segments), rows.stats, langs, doc_codes, params, depth, batch)
            # the search opens the index again, as a worker does: the pages tuning mapped would count twice
            release_pages(built.index)
            scores, found = _exact_neighbours(job, rows, progress) if device == "gpu" else _neighbours(job, runner, progress)
            write_neighbours(staging, scores, found, settings.scoring, langs)
        write_rejects(staging, rejects)
        manifest = index_manifest(staging, replace(provenance, skipped=dict(skipped)), built, settings,
                                  int(doc_codes.max()) + 1, len(rows), rows.language_counts(), rows.stats,
                                  len(rejects), rows.segments, settings.uses_neighbourhoods and device == "gpu")
        write_manifest(staging, manifest)
    return manifest, rejects


def _language_stats(rows: StagedRows, langs: np.ndarray, settings: IndexSettings) -> LanguageStats | None:
    """LanguageStats.fit's statistics from statistics_sample's rows, gathered one language at a time
    (checked for two languages first, so that one language's rows are not gathered for nothing)."""
    if not settings.language_neutral:
        return None
    sample = list(statistics_sample(langs, rows.doc_keys()))
    return LanguageStats.fit_groups((name, rows.raw(of_language)) for name, of_language in sample) if len(sample) >= 2 else None


def _built_on_disk(staging: Path, plans: list[IndexPlan], rows: StagedRows, langs: np.ndarray,
                   runner: SegmentRunner, progress: Progress | None) -> BuiltIndex:
    """The first of `plans` whose tuning reaches the target, written to staging; when none does, the
    closest (built again unless it was the last)."""
    tried: list[tuple[IndexPlan, dict]] = []
    for plan in plans:
        built = _build_plan(staging, plan, rows, langs, runner, progress)
        if not built.below_target:
            built.also_tried = tuple(entry for _, entry in tried)
            return built
        tried.append((plan, {"key": plan.key, "params": built.tuning["params"], "recall@10": built.tuning["recall@10"]}))
    closest = max(tried, key=lambda pair: pair[1]["recall@10"])[0]
    if closest is not built.plan:
        built = _build_plan(staging, closest, rows, langs, runner, progress)
    built.also_tried = tuple(entry for plan, entry in tried if plan is not closest)
    return built


def _build_plan(staging: Path, plan: IndexPlan, rows: StagedRows, langs: np.ndarray, runner: SegmentRunner,
                progress: Progress | None) -> BuiltIndex:
    trained = new_index(plan, rows.dim)
    sample = training_rows(trained, len(rows))
    trained.train(np.ascontiguousarray(rows.searchable(sample, langs)))
    partials = []
    blocks = ((rows.first_row(number), rows.segment_searchable(number, langs)) for number in range(len(rows.segments)))
    for number, serialized in enumerate(runner.partials(trained, blocks)):
        partials.append(staging / f"partial-{number:06d}.faiss")
        serialized.tofile(partials[-1])
        if progress:
            progress(rows.first_row(number) + rows.segments[number]["rows"], len(rows), "adding")
    crash_point("partials")
    index = merged_on_disk(faiss.clone_index(trained), partials, staging / LISTS_FILE)
    crash_point("merge")
    for path in partials:
        path.unlink()
    try:
        faiss.write_index(index, str(staging / INDEX_FILE))
    except RuntimeError as exc:  # faiss reports a failed write (disk full) this way
        raise OSError(str(exc).strip().splitlines()[-1]) from None
    del index  # the written one is read back as searches will read it: lists mapped read-only
    index = open_on_disk(staging / INDEX_FILE)
    tuning, reached = _tuned(index, rows, langs)
    if progress:
        progress(len(rows), len(rows), "tuning")
    return BuiltIndex(index, "cpu", tuning, plan, below_target=not reached, trained_on=len(sample))


def _tuned(index: faiss.Index, rows: StagedRows, langs: np.ndarray) -> tuple[dict, bool]:
    """faiss_index's tuning with the in-memory build's queries (the last rows) and base (the others)."""
    held_out = held_out_count(len(rows))
    kept = len(rows) - held_out
    if held_out == 0:
        return {"params": {}, "recall@10": 1.0, "queries": 0}, True
    queries = rows.searchable(np.arange(kept, len(rows)), langs)
    k = min(TUNING_K, kept)
    heap = faiss.ResultHeap(held_out, k, keep_max=True)
    for number, segment in enumerate(rows.segments):
        first = rows.first_row(number)
        upto = min(segment["rows"], kept - first)
        if upto <= 0:
            break
        base = rows.segment_searchable(number, langs)[:upto]
        scores, found = faiss.knn(queries, base, min(k, upto), metric=faiss.METRIC_INNER_PRODUCT)
        if found.shape[1] < k:
            pad = ((0, 0), (0, k - found.shape[1]))
            scores, found = np.pad(scores, pad, constant_values=-np.inf), np.pad(found, pad, constant_values=-1 - first)
        heap.add_result(scores, found + first)
    heap.finalize()
    outside = faiss.IDSelectorRange(kept, len(rows))  # held while the selector, which points to it, is used
    rerank = RERANK_FACTOR if is_lossy(index) else 1
    return tuned_against(index, queries, heap.I, TARGET_RECALL, rerank, lambda found: rows.searchable(found, langs),
                         faiss.IDSelectorNot(outside))


def _neighbours(job: NeighbourJob, runner: SegmentRunner, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest rows of other documents through the whole index, a segment of queries at a time."""
    total = len(job.doc_codes)
    scores = np.full((total, job.depth), -np.inf, np.float32)
    found = np.full((total, job.depth), -1, np.int64)
    stop = 0
    for segment, (segment_scores, segment_found) in zip(job.segments, runner.neighbourhoods(job)):
        first, stop = stop, stop + segment["rows"]
        scores[first:stop], found[first:stop] = segment_scores, segment_found
        if progress:
            progress(stop, total, "neighbourhoods")
    return scores, found


def _exact_neighbours(job: NeighbourJob, rows: StagedRows, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest rows of other documents, exact, on the GPU."""
    def segments() -> Iterator[tuple[int, np.ndarray]]:
        return ((rows.first_row(number), rows.segment_searchable(number, job.langs)) for number in range(len(job.segments)))

    told = (lambda done, total: progress(done, total, "neighbourhoods")) if progress else None
    return exact_neighbours_streamed(segments, job.doc_codes, job.depth, "gpu", progress=told)
