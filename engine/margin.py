"""Ratio margin (Artetxe & Schwenk 2019, as LASER's mine_bitexts): a cosine divided by the mean cosine
of both sides to their k nearest neighbours, which discounts hubs that are close to everything."""

from __future__ import annotations

import numpy as np

MARGIN_K = 4


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
