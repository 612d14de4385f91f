"""Documents like a stored one, in any language or only in some: "find the Chinese version of this
Korean product". The stored document's own vector is the query, so nothing is embedded; or, with a task,
its text embedded as a query of that task."""

from __future__ import annotations

from dataclasses import replace

from collections.abc import Callable

import numpy as np

from xlsearch.engine.apps.documents import document_row_ids
from xlsearch.engine.languages import parse_lang_list
from xlsearch.engine.search import Hit, Searcher
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.vectors import normalize_rows


def similar_documents(index: IndexReader, doc_id: str, k: int = 10, langs: str | list[str] | None = None,
                      as_queries: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Hit]:
    """The k documents nearest to `doc_id` (a chunked document is the mean of its chunks), best first,
    the document itself left out. `as_queries` gives its rows' vectors instead of the stored ones (their
    texts embedded as queries of a task: task_queries.rows_as_queries)."""
    rows = document_row_ids(index, doc_id)
    vectors = index.vectors()[rows] if as_queries is None else as_queries(rows)
    query = normalize_rows(vectors.mean(axis=0, keepdims=True))
    hits = Searcher(index).search_vectors(query, k + 1, parse_lang_list(langs))[0]
    others = [hit for hit in hits if hit.id != doc_id][:k]
    return [replace(hit, rank=rank) for rank, hit in enumerate(others, start=1)]
