"""Margin ranking at query time (Artetxe & Schwenk's ratio margin, as `xlsearch eval --scoring margin`).

A document's cosine to the query is divided by the mean of two neighbourhoods: the query's (its MARGIN_K
best cosines) and the document's (its MARGIN_K best cosines to other documents, computed when the index
is written). Documents close to everything (hubs) lose their advantage. On a language-neutral index
this is what keeps same-language search as good as plain cosine: measured on the demo corpus plus the
paraphrases, paraphrase found first 0.963 with cosine, 0.990 with margin (plain cosine: 0.990)."""

from __future__ import annotations

import numpy as np

from xlsearch.engine.ranking.margin import MARGIN_K, neighbourhood, ratio_margin
from xlsearch.engine.ranking.translations import PARALLEL_MARGIN, TRANSLATION_DEPTH, translations_left_out

NEIGHBOURHOOD_FILE = "neighbourhood.npy"
# Candidates re-ranked per query: as deep as eval's margin scoring looks
RERANK_DEPTH = 32


def neighbourhood_means(scores: np.ndarray, k: int = MARGIN_K) -> np.ndarray:
    """Each row's mean of its k best cosines to other documents (-inf where fewer were in reach)."""
    result = neighbourhood(scores, k).astype(np.float32)
    lone = np.isnan(result)  # no other document in reach: a typical neighbourhood, neither hub nor outlier
    result[lone] = np.nanmedian(result) if not lone.all() else 0.0
    return result


def neighbour_depth(scoring: str) -> int:
    """How many nearest rows of other documents a scoring's neighbourhoods are computed from."""
    return TRANSLATION_DEPTH if scoring == PARALLEL_MARGIN else MARGIN_K


def scoring_neighbourhoods(scoring: str, scores: np.ndarray, rows: np.ndarray, langs) -> np.ndarray:
    """Each row's neighbourhood under `scoring` (margin or parallel-margin), from its nearest rows of other
    documents (scores and rows best first, neighbour_depth(scoring) deep); `langs` is each row's language."""
    if scoring == PARALLEL_MARGIN:
        codes = np.unique(np.asarray(langs, dtype=str), return_inverse=True)[1].ravel()
        scores = translations_left_out(scores, rows, codes)
    return neighbourhood_means(scores)


def margin_scores(scores: np.ndarray, rows: np.ndarray, document_side: np.ndarray) -> np.ndarray:
    """Ratio margins of each query's candidates (best cosine first, rows -1 where none); the query's
    neighbourhood is its k best cosines among them."""
    found = rows >= 0
    query_side = neighbourhood(np.where(found, scores, -np.inf), MARGIN_K)
    margins = ratio_margin(scores, query_side, document_side[np.maximum(rows, 0)])
    return np.where(found, margins, -np.inf)
