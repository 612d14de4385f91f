"""Removing documents from an index without re-embedding anything: their rows are marked deleted where
the index can be updated in place (engine.store.incremental), else the index is written without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xlsearch.engine.store.publish import writer_lock
from xlsearch.engine.store.manifest import Manifest
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.writer import rewrite_index


def delete_documents(directory: Path, ids: list[str]) -> tuple[Manifest, list[str], list[str]]:
    """Remove every vector (all chunks) of the given document ids. Returns the new manifest, the ids
    removed and the ids the index did not have."""
    with writer_lock(Path(directory)):
        index = IndexReader(directory)
        doc_ids = index.column("doc_id")
        wanted = list(dict.fromkeys(ids))
        present = set(doc_ids[np.isin(doc_ids, wanted)].tolist())
        removed = [i for i in wanted if i in present]
        missing = [i for i in wanted if i not in present]
        manifest = index.manifest
        if removed:
            manifest = rewrite_index(index, ~np.isin(doc_ids, removed))
        del index  # its lease let go: the version it read is removed as the lock is
        return manifest, removed, missing
