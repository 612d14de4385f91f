"""Ranking metrics from a score matrix and, per query, the set of columns that count as right."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KS = (1, 5, 10)


@dataclass
class DirectionScores:
    """Metrics of one direction (e.g. zh->en) over its queries."""

    queries: int
    recall: dict[int, float]  # k -> share of queries with a right answer in the top k
    mrr: float
    xsim_error: float  # LASER's xsim: share of queries whose best candidate is wrong
    same_language_top10: float | None = None  # pooled only: share of top-10 hits in the query's language

    def to_dict(self) -> dict:
        out = {"queries": self.queries, **{f"recall@{k}": round(v, 4) for k, v in self.recall.items()},
               "mrr": round(self.mrr, 4), "xsim_error": round(self.xsim_error, 4)}
        if self.same_language_top10 is not None:
            out["same_language_top10"] = round(self.same_language_top10, 4)
        return out


def first_right_rank(ranked: np.ndarray, right: list[np.ndarray]) -> np.ndarray:
    """1-based rank of the first right column in each row of `ranked` (0 when none is ranked)."""
    ranks = np.zeros(len(ranked), dtype=np.int64)
    for i, (row, answers) in enumerate(zip(ranked, right)):
        hits = np.flatnonzero(np.isin(row, answers))
        ranks[i] = hits[0] + 1 if len(hits) else 0
    return ranks


def direction_scores(ranks: np.ndarray, same_language: np.ndarray | None = None) -> DirectionScores:
    """From first-right ranks (0 = not found in the ranked depth)."""
    found = ranks > 0
    recall = {k: float(np.mean(found & (ranks <= k))) for k in KS}
    mrr = float(np.mean(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0)))
    return DirectionScores(
        queries=len(ranks),
        recall=recall,
        mrr=mrr,
        xsim_error=1.0 - recall[1],
        same_language_top10=None if same_language is None else float(np.mean(same_language)),
    )

