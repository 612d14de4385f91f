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


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for the query path: np.unique's first call imports numpy.ma (17 ms), a
    fifth of what a cold query may add to Python's start-up."""
    ordered = np.sort(np.asarray(values).ravel())
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered
