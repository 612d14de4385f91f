"""The build runner: read -> map -> chunk -> embed in windows -> write one index version."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import chain
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import BackendError, InputError
from xlsearch.engine.store.publish import crash_point, published, writer_lock
from xlsearch.engine.search import check_compatible
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.ann.index_types import IndexPlan, choose_plan
from xlsearch.engine.store.reader import IndexReader, rewrite_index, write_index
from xlsearch.indexer.batches import batched
from xlsearch.indexer.chunking import ChunkPolicy, chunk_spans
from xlsearch.indexer.documents import Document
from xlsearch.indexer.mapper import FieldMap, MappingReport, map_records
from xlsearch.indexer.readers import read_records

# Called with (documents embedded so far, total documents).
Progress = Callable[[int, int], None]


@dataclass
class BuildResult:
    manifest: dict
    report: MappingReport
    rejects: list[dict]


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


def count_records(corpora: list[str]) -> int:
    """A first, cheap pass (no embedding) so progress can show an ETA."""
    return sum(1 for corpus in corpora for _ in read_records(corpus))


def _meta_table(chunks: list[Chunk]) -> pa.Table:
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


def _rejects(embedder: Embedder, chunks: list[Chunk], vectors: np.ndarray, strict: bool) -> list[dict]:
    """Chunks a server refused (NaN rows): reported with file, id and the server's message."""
    rejects = []
    for row in np.flatnonzero(~np.isfinite(vectors).all(axis=1)):
        chunk = chunks[row]
        reason = embedder.rejected.get(chunk.text, "refused by the embedding server")
        if strict:
            raise BackendError(f"{chunk.doc.source}: document {chunk.doc.id!r} was refused: {reason} (--strict)")
        rejects.append({"source": chunk.doc.source, "id": chunk.doc.id, "chunk": chunk.number, "reason": reason})
    return rejects


def build_index(
    corpora: list[str],
    index_dir: Path,
    embedder: Embedder,
    fields: FieldMap = FieldMap(),
    window: int = 256,
    progress: Progress | None = None,
    settings: IndexSettings = IndexSettings(),
    chunking: ChunkPolicy | None = None,
    strict: bool = False,
    append: bool = False,
    on_plan: Callable[[IndexPlan], None] | None = None,
) -> BuildResult:
    """Index `corpora` into `index_dir`, or with `append` add them to the index there (a document id seen
    again replaces its old version). Documents over the model's input limit (or `chunking`) become
    several vectors. Inputs the server refuses are left out and reported, or stop the build (`strict`).
    One writer at a time; the published index changes only when the whole new version is written.
    The index plan for the counted documents goes to `on_plan` before any embedding, and a plan over the
    memory budget stops the build there."""
    index_dir = Path(index_dir)
    with writer_lock(index_dir):
        existing = IndexReader(index_dir) if append and published(index_dir).exists() else None
        if existing is not None:
            check_compatible(existing, embedder)
            chunking = chunking or ChunkPolicy(existing.manifest["chunking"]["size"], existing.manifest["chunking"]["overlap"])
        report = MappingReport()
        policy = chunking or ChunkPolicy.for_max_tokens(embedder.profile.max_tokens)
        total = count_records(corpora)
        if existing is not None:
            settings = existing.settings
        plan = choose_plan(settings.index_type, total + (len(existing) if existing is not None else 0), embedder.dim,
                           settings.storage, settings.max_memory)
        if on_plan:
            on_plan(plan)
        chunks: list[Chunk] = []
        parts: list[np.ndarray] = []
        # a window of documents at a time: the reader never runs further ahead of the embedder than that
        for documents in batched(read_documents(corpora, fields, report), window):
            window_chunks = chunk_documents(documents, policy)
            parts.append(embedder.embed_documents([c.text for c in window_chunks]))
            chunks += window_chunks
            crash_point("embedding")
            if progress:
                progress(report.indexed, max(total - sum(report.skipped.values()), report.indexed))
        if not chunks:
            skipped = sum(report.skipped.values())
            raise InputError(f"{', '.join(corpora)}: no documents to index" + (f" ({skipped} empty or duplicate skipped)" if skipped else ""))
        vectors = np.vstack(parts)
        rejects = _rejects(embedder, chunks, vectors, strict)
        if rejects:
            kept = np.isfinite(vectors).all(axis=1)
            vectors, chunks = vectors[kept], [c for c, keep in zip(chunks, kept) if keep]
            if not chunks:
                raise BackendError(f"the embedding server refused every document; first: {rejects[0]['reason']}")
        if existing is not None:
            replaced = np.isin(existing.column("doc_id"), [c.doc.id for c in chunks])
            manifest = rewrite_index(
                existing, ~replaced, vectors, _meta_table(chunks), rejects=rejects,
                corpora=list(dict.fromkeys(existing.manifest["corpora"] + corpora)),
            )
        else:
            manifest = write_index(
                index_dir,
                vectors,
                _meta_table(chunks),
                {**embedder.describe(), "corpora": corpora, "skipped": dict(report.skipped),
                 "chunking": {"size": policy.size, "overlap": policy.overlap, "unit": "characters"},
                 "documents": len({c.doc.id for c in chunks}), "rejected": len(rejects)},
                settings=settings,
                rejects=rejects,
            )
    return BuildResult(manifest=manifest, report=report, rejects=rejects)
