"""The build runner: read -> map -> chunk -> embed in windows -> write one index version."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import chain
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from xlsearch.engine.ann.faiss_index import DeviceChoice, resolve_device
from xlsearch.engine.ann.index_types import IndexPlan
from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.errors import BackendError, InputError
from xlsearch.engine.store.manifest import Manifest
from xlsearch.engine.store.publish import crash_point, published, writer_lock
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.writer import Provenance, plan_index, provenance_of, rewrite_index, write_index
from xlsearch.indexer.batches import batched
from xlsearch.indexer.chunking import ChunkPolicy, chunk_spans
from xlsearch.indexer.documents import Document
from xlsearch.indexer.mapper import FieldMap, MappingReport, map_records
from xlsearch.indexer.readers import read_records

# Called with (chunks embedded so far, chunks planned): a chunk, not a document, is the unit of work, so
# that one long document moves the bar too.
Progress = Callable[[int, int], None]


@dataclass
class BuildResult:
    manifest: Manifest
    report: MappingReport
    rejects: list[dict]
    embedded: int | None  # texts sent to the model; None without the cache (then all were)
    from_cache: int
    failed_servers: dict[str, str]  # embedding servers that failed during the build, with their first error


@dataclass
class Chunk:
    """One vector's worth of a document: the whole of it, or a span of a long one."""

    doc: Document
    number: int
    start: int
    end: int
    of: int

    @property
    def text(self) -> str:
        return self.doc.text[self.start : self.end]


def chunk_documents(documents: list[Document], policy: ChunkPolicy) -> list[Chunk]:
    chunks = []
    for doc in documents:
        spans = chunk_spans(doc.text, policy)
        chunks += [Chunk(doc, n, start, end, len(spans)) for n, (start, end) in enumerate(spans)]
    return chunks


def read_documents(corpora: list[str], fields: FieldMap, report: MappingReport) -> Iterator[Document]:
    """Documents of every corpus in order, lazily; an id repeated across corpora keeps its first."""
    return map_records(chain.from_iterable(read_records(corpus) for corpus in corpora), fields, report)


def count_chunks(corpora: list[str], fields: FieldMap, policy: ChunkPolicy) -> int:
    """Chunks, in a first, cheap pass (no embedding): the index plan's count and the progress bar's total.
    Counted as the build will cut them; records it will skip count too (an upper bound)."""
    chunks = 0
    for corpus in corpora:
        for record in read_records(corpus):
            text = record.fields.get(fields.text_field)
            if isinstance(text, str) and text.strip():
                chunks += len(chunk_spans(text, policy))
    return chunks


def meta_table(chunks: list[Chunk]) -> pa.Table:
    return pa.table(
        {
            "doc_id": [c.doc.id for c in chunks],
            "lang": [c.doc.lang for c in chunks],
            "text": [c.text for c in chunks],
            "source": [c.doc.source for c in chunks],
            "chunk": pa.array([c.number for c in chunks], pa.int32()),
            "chunks": pa.array([c.of for c in chunks], pa.int32()),
            "start": pa.array([c.start for c in chunks], pa.int64()),
            "end": pa.array([c.end for c in chunks], pa.int64()),
            # One JSON column: corpora disagree on extra fields and their types.
            "extra": [json.dumps(c.doc.extra, ensure_ascii=False, default=str) if c.doc.extra else "" for c in chunks],
        }
    )


def refused_chunks(embedder: Embedder, chunks: list[Chunk], vectors: np.ndarray) -> list[dict]:
    """Chunks a server refused (NaN rows): reported with file, id and the server's message."""
    rejects = []
    for row in np.flatnonzero(~np.isfinite(vectors).all(axis=1)):
        chunk = chunks[row]
        reason = embedder.rejected.get(chunk.text, "refused by the embedding server")
        rejects.append({"source": chunk.doc.source, "id": chunk.doc.id, "chunk": chunk.number, "reason": reason})
    return rejects


def without_refused(vectors: np.ndarray, chunks: list[Chunk]) -> tuple[np.ndarray, list[Chunk]]:
    """The vectors and chunks less those a server refused (NaN rows)."""
    kept = np.isfinite(vectors).all(axis=1)
    return vectors[kept], [chunk for chunk, keep in zip(chunks, kept) if keep]


def too_many_refused(rejects: list[dict], limit: int, strict: bool) -> BackendError:
    """What stops a build that found more refused inputs than it may leave out: the last one, and the count."""
    last = rejects[-1]
    refused = f"{last['source']}: document {last['id']!r} was refused: {last['reason']}"
    if limit == 0:
        return BackendError(f"{refused} ({'`strict`' if strict else '`max_rejects` 0'})")
    return BackendError(f"{refused}; {len(rejects)} inputs refused, more than `max_rejects` ({limit})")


def planned_build(settings: IndexSettings, count: int, dim: int, on_plan: Callable[[IndexPlan], None] | None,
                  on_notice: Callable[[str], None] | None,
                  out_of_core: bool = False) -> tuple[DeviceChoice, list[IndexPlan]]:
    """The device and the index plans for `count` vectors of `dim`, chosen before any work: why a GPU
    present is left unused goes to `on_notice`, the plan chosen to `on_plan`."""
    device = resolve_device(settings.device)
    if device.notice and on_notice:
        on_notice(device.notice)
    plans = plan_index(settings, count, dim, device, out_of_core)
    if on_plan:
        on_plan(plans[0])
    return device, plans


def build_index(
    corpora: list[str],
    index_dir: Path,
    embedder: Embedder,
    spec: EmbedderSpec,
    fields: FieldMap = FieldMap(),
    window: int = 256,
    progress: Progress | None = None,
    settings: IndexSettings = IndexSettings(),
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    strict: bool = False,
    append: bool = False,
    on_plan: Callable[[IndexPlan], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    max_rejects: int | None = None,
) -> BuildResult:
    """Index `corpora` into `index_dir` with `embedder` (made from `spec`), or with `append` add them to
    the index there (a document id seen again replaces its old version). Documents over the model's
    input limit (its servers' own, `max_input_tokens`; or `chunk_size` characters) become several vectors; an appended
    corpus is chunked as the index was, never over that limit. Inputs the server refuses are left out and
    reported; more than `max_rejects` of them (default: none with `strict`, else no limit) stop the build
    at the window where they are found. One writer at a time; the published index changes only when
    the whole new version is written. The index plan, chosen once from the number of chunks and the
    device, goes to `on_plan` before any embedding, and a plan over the memory budget (or a GPU asked for
    that cannot be used) stops the build there; `on_notice` hears why a GPU present is left unused, and
    what the embedder tells (a server down or back)."""
    index_dir = Path(index_dir)
    limit = max_rejects if max_rejects is not None else (0 if strict else None)
    if on_notice:
        embedder.listen(on_notice)
    with writer_lock(index_dir):
        existing = IndexReader(index_dir) if append and published(index_dir).exists() else None
        if existing is not None:
            existing.check_compatible(embedder)
            settings = existing.settings
        if existing is not None and chunk_size is None and chunk_overlap is None:
            saved = existing.manifest.chunking
            policy = ChunkPolicy.for_embedder(embedder, saved=saved)
        else:
            policy = ChunkPolicy.for_embedder(embedder, chunk_size, chunk_overlap)
        planned_chunks = count_chunks(corpora, fields, policy)
        count = planned_chunks + (len(existing) if existing is not None else 0)
        # an index on disk stays there: its rows are in segments, never all in memory
        on_disk = existing is not None and bool(existing.manifest.index.get("on_disk"))
        device, plans = planned_build(settings, count, embedder.dim, on_plan, on_notice, out_of_core=on_disk)
        report = MappingReport()
        chunks: list[Chunk] = []
        parts: list[np.ndarray] = []
        rejects: list[dict] = []
        # a window of documents at a time: the reader never runs further ahead of the embedder than that;
        # their chunks go to the embedder `window` at a time, so that the cache keeps (and the bar shows)
        # the work done inside one long document too (a 5 MB document is about 11,000 chunks)
        for documents in batched(read_documents(corpora, fields, report), window):
            window_chunks = chunk_documents(documents, policy)
            window_parts = []
            for start in range(0, len(window_chunks), window):
                piece = window_chunks[start:start + window]
                window_parts.append(embedder.embed_documents([c.text for c in piece]))
                chunks += piece
                crash_point("embedding")
                if progress:
                    progress(len(chunks), max(planned_chunks, len(chunks)))
            parts += window_parts
            rejects += refused_chunks(embedder, window_chunks, np.vstack(window_parts))
            if limit is not None and len(rejects) > limit:
                raise too_many_refused(rejects, limit, strict)
        if not chunks:
            skipped = sum(report.skipped.values())
            raise InputError(f"{', '.join(corpora)}: no documents to index" + (f" ({skipped} empty or duplicate skipped)" if skipped else ""))
        vectors = np.vstack(parts)
        if rejects:
            vectors, chunks = without_refused(vectors, chunks)
            if not chunks:
                raise BackendError(f"the embedding server refused every document; first: {rejects[0]['reason']}")
        if existing is not None:
            replaced = np.isin(existing.column("doc_id"), [c.doc.id for c in chunks])
            provenance = provenance_of(existing, corpora=list(dict.fromkeys(existing.manifest.corpora + corpora)))
            manifest = rewrite_index(existing, ~replaced, vectors, meta_table(chunks), rejects=rejects, plans=plans,
                                     provenance=provenance, device=device)
        else:
            described = embedder.describe(spec.task)  # the query prompt as the index's task makes it
            provenance = Provenance(
                embedder=spec.resolved(embedder), model=embedder.model, family=embedder.profile.family,
                prompts=described["prompts"], corpora=corpora, skipped=dict(report.skipped),
                chunking=policy.record())
            manifest = write_index(index_dir, vectors, meta_table(chunks), provenance, plans, settings=settings,
                                   rejects=rejects, device=device.device)
        existing = None  # its lease let go: the version it read is removed as the lock is
    embedded, from_cache = embedder.cache_use or (None, 0)
    return BuildResult(manifest=manifest, report=report, rejects=rejects, embedded=embedded, from_cache=from_cache,
                       failed_servers=dict(embedder.failed_servers))
