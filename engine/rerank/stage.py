"""The rerank stage: the first stage's candidates of each query scored by the reranker and ordered by
that score, each hit keeping its first-stage score and rank and all its metadata."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from xlsearch.engine.errors import XLSearchError
from xlsearch.engine.rerank.client import RerankClient
from xlsearch.engine.rerank.spec import RerankSpec
from xlsearch.engine.search import Hit


def reordered(hits: list[Hit], scores: list[float], k: int) -> list[Hit]:
    """The k best of `hits` by `scores` (ties: first-stage order), `score` now the reranker's."""
    order = sorted(range(len(hits)), key=lambda i: -scores[i])[:k]
    return [replace(hits[i], rank=rank, score=float(scores[i]), first_stage_score=hits[i].score,
                    first_stage_rank=hits[i].rank) for rank, i in enumerate(order, start=1)]


class Reranker:
    """Orders each query's candidates with a rerank server; `notice` hears a fallback."""

    def __init__(self, spec: RerankSpec, notice: Callable[[str], None]) -> None:
        self.spec = spec
        self.client = RerankClient(spec)
        self._notice = notice
        self._requests = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="xlsearch-rerank")

    @property
    def depth(self) -> int:
        return self.spec.depth

    def scores(self, queries: list[str], candidates: list[list[str]], instruct: str | None = None) -> list[list[float]] | None:
        """Each query's candidates' scores (`concurrency` queries at a time), instructed with `instruct`
        where the server takes one. A failing reranker fails the search; an optional one gives None, with a
        notice saying why."""
        def scored(query: str, texts: list[str]) -> list[float]:
            return self.client.scores(query, texts, instruct) if texts else []

        try:
            return list(self._requests.map(scored, queries, candidates))
        except XLSearchError as exc:
            if not self.spec.optional:
                raise
            self._notice(f"hits are in first-stage order, not reranked (the reranker is optional): {exc}")
            return None

    def rerank(self, queries: list[str], candidates: list[list[Hit]], k: int, instruct: str | None = None) -> list[list[Hit]]:
        """The k best of each query's candidates by the reranker; in first-stage order when an optional
        reranker fails."""
        scores = self.scores(queries, [[hit.text for hit in hits] for hits in candidates], instruct)
        if scores is None:
            return [hits[:k] for hits in candidates]
        return [reordered(hits, s, k) for hits, s in zip(candidates, scores)]

    def close(self) -> None:
        self._requests.shutdown(wait=False, cancel_futures=True)
