"""Stored documents as queries of a task, for dedup and similar with a task instruction. The stored
vectors were embedded without one (documents carry no instruction); with a task, each document's text
(each chunk's) is embedded as a query of it, in the form the index searches, and compared with the stored
vectors, as a query of that task would be."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.store.reader import IndexReader

BATCH = 256  # texts per embedder call: progress is told this often


def rows_as_queries(index: IndexReader, embedder: Embedder, task: str, rows: np.ndarray | None = None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The texts of positions `rows` (default: every one) embedded as queries of `task`, language-neutral
    where the index is (each with its own language)."""
    rows = np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64)
    texts = index.column("text")[rows].astype(str).tolist()
    parts = []
    for start in range(0, len(texts), BATCH):
        parts.append(embedder.embed_queries(texts[start:start + BATCH], task))
        if progress:
            progress(min(start + BATCH, len(texts)), len(texts))
    raw = np.vstack(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    stats = index.language_stats
    return raw if stats is None else stats.neutralize(raw, index.column("lang")[rows].astype(str).tolist())
