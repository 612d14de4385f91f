"""The cross-lingual cosine matrix of a few texts: the picture that motivates the project."""

from __future__ import annotations

import numpy as np

from engine.embedders.base import Embedder
from engine.profiles import PARALLEL_TASK


def similarity_matrix(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Pairwise cosine of texts embedded symmetrically (all as queries), so no side gets another prompt."""
    vectors = embedder.embed_queries(texts, task=PARALLEL_TASK)
    return np.clip(vectors @ vectors.T, -1.0, 1.0)
