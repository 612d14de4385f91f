"""Small vector helpers shared by every backend and by search."""

from __future__ import annotations

import numpy as np


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka truncation: the first `dim` values, renormalised."""
    return normalize_rows(vectors[:, :dim])
