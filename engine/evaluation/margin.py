"""Ratio margin (Artetxe & Schwenk 2019, as LASER's mine_bitexts): a cosine divided by the mean cosine
of both sides to their k nearest neighbours, which discounts hubs that are close to everything."""

from __future__ import annotations

import numpy as np

MARGIN_K = 4


def neighbourhood(scores: np.ndarray, k: int = MARGIN_K) -> np.ndarray:
    """Mean of each row's k highest scores."""
    k = min(k, scores.shape[1])
    return np.mean(-np.partition(-scores, k - 1, axis=1)[:, :k], axis=1)


def ratio_margin(scores: np.ndarray, k: int = MARGIN_K, exclude_self: bool = False) -> np.ndarray:
    """Margin scores for a query x candidate cosine matrix. With `exclude_self` (pooled: the queries are
    also candidates, on the diagonal), a sentence is not its own neighbour."""
    working = scores.copy()
    if exclude_self:
        np.fill_diagonal(working, -np.inf)
    query_side = neighbourhood(working, k)
    candidate_side = neighbourhood(working.T, k)
    denominator = (query_side[:, None] + candidate_side[None, :]) / 2
    return working / denominator
