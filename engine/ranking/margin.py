"""Ratio margin (Artetxe & Schwenk 2019, as LASER's mine_bitexts): a cosine divided by the mean cosine
of both sides to their k nearest neighbours, which discounts hubs that are close to everything."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xlsearch.engine.ann.neighbours import nearest_of_other_groups

MARGIN_K = 4
# Rows per search call by default; also how often progress is reported. An inverted file is scanned list
# by list for a batch of LIST_SCAN_QUERIES or more (engine.ann.list_scan: each batch reads every list its
# queries probe, so larger batches scan faster); a caller bounded by memory (the out-of-core build) passes
# its own.
SELF_SEARCH_BATCH = 16_384


def neighbourhood(scores: np.ndarray, k: int = MARGIN_K) -> np.ndarray:
    """Mean of each row's k highest scores; -inf marks a missing score, and a row with none gets NaN."""
    k = min(k, scores.shape[1])
    top = -np.partition(-scores, k - 1, axis=1)[:, :k]
    finite = np.isfinite(top)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, top, 0).sum(axis=1) / finite.sum(axis=1)


def ratio_margin(scores: np.ndarray, query_side: np.ndarray, candidate_side: np.ndarray) -> np.ndarray:
    """Margins of a query x candidate score block; `candidate_side` broadcasts against `scores`."""
    return scores / ((query_side[:, None] + candidate_side) / 2)


def search_depth(doc_codes: np.ndarray, k: int) -> int:
    """How many rows a row's search asks for so that k of other documents remain: k, and as many as the
    longest document has chunks (its own overlap it and are skipped)."""
    return min(k + (int(np.bincount(doc_codes).max()) if len(doc_codes) else 0), len(doc_codes))


def other_document_neighbours(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    vectors: np.ndarray,
    doc_codes: np.ndarray,
    k: int = MARGIN_K,
    progress: Callable[[int, int], None] | None = None,
    first_row: int = 0,
    batch: int = SELF_SEARCH_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows of other documents, best first, as (scores, rows); -inf and -1 where
    fewer than k are in reach, searched search_depth deep. `search(queries, n)` answers (scores, rows)
    from the index; `doc_codes` numbers each row's document, every row of the index; `vectors` are rows
    `first_row`... of it (all of them by default; a shard of them when the index is built shard by
    shard), searched in calls of at most `batch` rows, as even as they divide."""
    depth = search_depth(doc_codes, k)
    scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
    rows = np.full((len(vectors), k), -1, dtype=np.int64)
    calls = max(1, -(-len(vectors) // max(1, batch)))
    bounds = np.linspace(0, len(vectors), calls + 1).astype(np.int64)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        found_scores, found_rows = search(np.ascontiguousarray(vectors[start:stop], dtype=np.float32), depth)
        scores[start:stop], rows[start:stop] = nearest_of_other_groups(
            found_scores, found_rows, doc_codes[first_row + start:first_row + stop], doc_codes, k)
        if progress:
            progress(int(stop), len(vectors))
    return scores, rows
