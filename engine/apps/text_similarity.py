"""The cross-lingual cosine matrix of a few texts: the picture that motivates the project."""

from __future__ import annotations

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.ranking.neutral import LanguageStats
from xlsearch.engine.profiles import PARALLEL_TASK


def similarity_matrix(embedder: Embedder, texts: list[str], stats: LanguageStats | None = None) -> np.ndarray:
    """Pairwise cosine of texts embedded symmetrically (all as queries), so no side gets another prompt;
    with `stats`, of their language-neutral forms (each text's language: its nearest centroid)."""
    vectors = embedder.embed_queries(texts, task=PARALLEL_TASK)
    if stats is not None:
        vectors = stats.neutralize(vectors, stats.detect(vectors))
    return np.clip(vectors @ vectors.T, -1.0, 1.0)
