"""The three stages of an embedding job, each a plain function of one unit of work, so that the same code
runs in-process and on Ray: read one input file into parts (a shard's worth of documents, chunked),
embed one part, write one shard."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.indexer.chunking import ChunkPolicy
from xlsearch.indexer.mapper import FieldMap, MappingReport, map_records
from xlsearch.indexer.pipeline import (Chunk, chunk_documents, meta_table, refused_chunks, too_many_refused,
                                       without_refused)
from xlsearch.indexer.readers import read_records
from xlsearch.indexer.shard_files import ShardRecord, shard_name, shard_table, write_shard


@dataclass
class Part:
    """The documents of one shard-to-be, chunked: the `part`th `shard_documents` of one input file."""

    shard: str
    input: str
    documents: int
    chunks: list[Chunk]
    skipped: dict[str, int] = field(default_factory=dict)  # records of the input skipped up to this part


@dataclass
class EmbeddedPart:
    shard: str
    table: object  # pa.Table: the shard's rows, vectors included, refused inputs left out
    own: dict  # what the shard records of itself (input, documents, rejects, skipped)
    failed_servers: dict[str, str]


def read_parts(number: int, corpus: str, fields: FieldMap, policy: ChunkPolicy, shard_documents: int,
               done: frozenset[str] = frozenset()) -> Iterator[Part]:
    """The parts of input file `corpus` (the job's `number`th), in order, less those already published
    (`done`, by shard name): each of `shard_documents` documents, the last of the rest. A record skipped
    (empty, a repeated id) is counted in the part being read when it was met; an input without documents
    is one empty part, which records its skips. The same input cut the same way gives the same parts."""
    report = MappingReport()
    documents = map_records(read_records(corpus), fields, report)
    counted: Counter = Counter()
    batch = list(islice(documents, shard_documents))
    part = 0
    source = None
    while True:
        following = list(islice(documents, shard_documents))
        source = batch[0].source if batch else source
        skipped = report.skipped - counted
        counted += skipped
        name = shard_name(number, part)
        if name not in done:
            yield Part(name, source or corpus, len(batch), chunk_documents(batch, policy), dict(skipped))
        if not following:
            return
        batch, part = following, part + 1


def embed_part(embedder: Embedder, part: Part, window: int, limit: int | None = None, strict: bool = False,
               progress: Callable[[int], None] | None = None) -> EmbeddedPart:
    """A part's vectors, `window` chunks at a time (so the cache keeps, and `progress` hears, the work of
    a long part). Inputs the server refuses are left out of the rows and recorded; more than `limit` of
    them in this part alone stop it before it is written (the job counts the rest)."""
    vectors, rejects = [], []
    for start in range(0, len(part.chunks), window):
        piece = part.chunks[start:start + window]
        found = embedder.embed_documents([c.text for c in piece])
        vectors.append(found)
        rejects += refused_chunks(embedder, piece, found)
        if limit is not None and len(rejects) > limit:
            raise too_many_refused(rejects, limit, strict)
        if progress:
            progress(len(piece))
    chunks = part.chunks
    matrix = np.vstack(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)
    if rejects:
        matrix, chunks = without_refused(matrix, chunks)
    table = shard_table(meta_table(chunks), matrix.reshape(len(chunks), embedder.dim))
    own = {"input": part.input, "documents": part.documents, "rejects": rejects, "skipped": part.skipped,
           "model": embedder.model, "dim": embedder.dim}
    return EmbeddedPart(part.shard, table, own, dict(embedder.failed_servers))


def write_part(directory: Path, embedded: EmbeddedPart) -> ShardRecord:
    return write_shard(directory, embedded.shard, embedded.table, embedded.own)


def check_refusals(total: list[dict], limit: int | None, strict: bool) -> None:
    """The job's own count: more refused inputs than `limit` across the shards stop it."""
    if limit is not None and len(total) > limit:
        raise too_many_refused(total, limit, strict)


def describe_skipped(records: list[ShardRecord]) -> dict[str, int]:
    total: Counter = Counter()
    for record in records:
        total.update(record.skipped)
    return dict(total)
