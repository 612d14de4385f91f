"""The build runner: read -> map -> embed in batches -> write one index version."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.embedders.base import Embedder
from engine.errors import InputError
from engine.store import write_index
from indexer.batches import batched
from indexer.documents import Document
from indexer.mapper import FieldMap, MappingReport, map_records
from indexer.readers import read_records

# Called with (documents embedded so far, total documents).
Progress = Callable[[int, int], None]


@dataclass
class BuildResult:
    manifest: dict
    report: MappingReport


def load_documents(corpora: list[str], fields: FieldMap, report: MappingReport) -> list[Document]:
    documents: list[Document] = []
    for corpus in corpora:
        documents.extend(map_records(read_records(corpus), fields, report))
    if not documents:
        skipped = sum(report.skipped.values())
        raise InputError(f"{', '.join(corpora)}: no documents to index" + (f" ({skipped} empty or duplicate skipped)" if skipped else ""))
    return documents


def _meta_table(documents: list[Document]) -> pa.Table:
    return pa.table(
        {
            "doc_id": [d.id for d in documents],
            "lang": [d.lang for d in documents],
            "text": [d.text for d in documents],
            "source": [d.source for d in documents],
            # One JSON column: corpora disagree on extra fields and their types.
            "extra": [json.dumps(d.extra, ensure_ascii=False, default=str) if d.extra else "" for d in documents],
        }
    )


def embed_documents(embedder: Embedder, texts: list[str], batch_size: int, progress: Progress | None) -> np.ndarray:
    parts = []
    done = 0
    for batch in batched(texts, batch_size):
        parts.append(embedder.embed_documents(batch))
        done += len(batch)
        if progress:
            progress(done, len(texts))
    return np.vstack(parts)


def build_index(
    corpora: list[str],
    index_dir: Path,
    embedder: Embedder,
    fields: FieldMap = FieldMap(),
    batch_size: int = 64,
    progress: Progress | None = None,
    language_neutral: bool = True,
) -> BuildResult:
    report = MappingReport()
    documents = load_documents(corpora, fields, report)
    vectors = embed_documents(embedder, [d.text for d in documents], batch_size, progress)
    manifest = write_index(
        index_dir,
        vectors,
        _meta_table(documents),
        {**embedder.describe(), "corpora": corpora, "skipped": dict(report.skipped)},
        language_neutral=language_neutral,
    )
    return BuildResult(manifest=manifest, report=report)
