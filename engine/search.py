"""Search: embed queries with the index's own model, rank by inner product, filter by language."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import InputError
from xlsearch.engine.languages import normalize_lang, parse_lang_list
from xlsearch.engine.ranking.neighbourhoods import RERANK_DEPTH, margin_scores
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.text import is_blank

if TYPE_CHECKING:  # a search without a reranker imports nothing of it
    from xlsearch.engine.rerank.stage import Reranker

HIT_COLUMNS = ["doc_id", "lang", "text", "source", "chunk", "chunks", "start", "end", "extra"]


@dataclass
class Hit:
    rank: int
    score: float  # what the ranking sorts by: the ratio margin, or the cosine on an index ranked by cosine;
    # the reranker's score for a reranked hit
    id: str
    lang: str
    text: str
    source: str
    extra: dict = field(default_factory=dict)
    chunk: int | None = None  # for a document split into chunks: the best chunk, shown as `text`
    span: tuple[int, int] | None = None  # that chunk's characters in the document
    cosine: float | None = None  # the cosine behind a margin score
    first_stage_score: float | None = None  # a reranked hit's score and rank before the reranker
    first_stage_rank: int | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.chunk is None:
            del data["chunk"], data["span"]
        for name in ("cosine", "first_stage_score", "first_stage_rank"):
            if data[name] is None:
                del data[name]
        return {**{k: v for k, v in data.items() if k != "extra"}, **data["extra"]}


def check_queries(queries: list[str]) -> None:
    """A query that shows nothing (empty, spaces, zero-width characters) would rank every document
    arbitrarily: refuse it, naming which."""
    for position, query in enumerate(queries):
        if is_blank(query):
            which = "the query" if len(queries) == 1 else f"query {position + 1} of {len(queries)}"
            raise InputError(f"{which} is empty")


class Searcher:
    """Ranks an index's documents for query texts (embedded by `embedder`, for `task`: None is the model's
    default) or for vectors already in the index's space (no embedder needed); a `reranker` orders the
    first stage's candidates of query texts."""

    def __init__(self, index: IndexReader, embedder: Embedder | None = None, task: str | None = None,
                 reranker: Reranker | None = None) -> None:
        if embedder is not None:
            index.check_compatible(embedder)
        self.index = index
        self.embedder = embedder
        self.task = task
        self.reranker = reranker

    def language_rows(self, langs: list[str]) -> np.ndarray | None:
        """The rows in `langs`; asking only for languages the index has none of is the user's error (an
        empty answer would not say why)."""
        if not langs:
            return None
        if not set(langs) & set(self.index.manifest.languages):
            held = ", ".join(self.index.manifest.languages)
            raise InputError(f"the index has no documents in {', '.join(langs)} (it has {held})", field="lang",
                             value=",".join(langs))
        return np.flatnonzero(np.isin(self.index.column("lang"), langs))

    def search(
        self, queries: list[str], k: int = 10, langs: str | list[str] | None = None, query_lang: str | None = None,
        task: str | None = None,
    ) -> list[list[Hit]]:
        """The k best documents for each query, best first. On a language-neutral index the query's
        language is `query_lang` or, when not given, its nearest language centroid. `task` replaces the
        searcher's own for these queries."""
        check_queries(queries)
        task = task or self.task
        return self.rank(self.embedder.embed_queries(queries, task), k, langs, query_lang, queries, task)

    def rank(self, raw: np.ndarray, k: int = 10, langs: str | list[str] | None = None,
             query_lang: str | None = None, queries: list[str] | None = None,
             task: str | None = None) -> list[list[Hit]]:
        """`search` for queries already embedded by the index's model (a server embeds the queries of
        many requests together, then ranks each request's own). With a reranker and the `queries`' texts,
        the first stage fetches the reranker's depth of candidates (k at least) and the reranker orders
        them, instructed with `task`."""
        langs = parse_lang_list(langs)
        vectors = self.query_vectors(raw, query_lang)
        if self.reranker is None or queries is None:
            return self.search_vectors(vectors, k, langs)
        candidates = self.search_vectors(vectors, max(k, self.reranker.depth), langs)
        return self.reranker.rerank(queries, candidates, k, task)

    def query_vectors(self, raw: np.ndarray, query_lang: str | None = None) -> np.ndarray:
        """Raw query vectors in the form the index holds."""
        stats = self.index.language_stats
        if stats is None:
            return raw
        langs = [normalize_lang(query_lang)] * len(raw) if query_lang else stats.detect(raw)
        return stats.neutralize(raw, langs)

    def search_vectors(self, vectors: np.ndarray, k: int, langs: list[str]) -> list[list[Hit]]:
        """k documents per query. Where documents were chunked, their best chunk by cosine stands for
        them (the passage shown): more chunks are fetched until k distinct documents are found or none
        are left. On a margin-ranked index the best RERANK_DEPTH (at least k) documents by cosine are
        then re-ranked by margin."""
        row_filter = self.language_rows(langs)
        available = len(self.index) if row_filter is None else len(row_filter)
        chunked = self.index.manifest.chunked
        margin = self.index.neighbourhoods is not None
        fetch = max(k, RERANK_DEPTH) if margin else k
        fetch = fetch * 4 if chunked else fetch
        while True:
            cosines, rows = self.index.search(vectors, fetch, row_filter)
            if chunked:
                cosines, rows = self._best_chunks(cosines, rows)
            scores = cosines
            if margin:
                scores = margin_scores(cosines, rows, self.index.neighbourhoods)
                order = np.argsort(-scores, axis=1, kind="stable")
                scores, cosines, rows = (np.take_along_axis(a, order, axis=1) for a in (scores, cosines, rows))
            results = [self._hits(s, c if margin else None, r, k) for s, c, r in zip(scores, cosines, rows)]
            if not chunked or fetch >= available or all(len(hits) >= k for hits in results):
                return results
            fetch *= 4

    def _best_chunks(self, cosines: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each query's candidates (best cosine first) with every chunk after a document's first removed
        (row -1, cosine -inf), so that a document is ranked by the passage that matches best."""
        cosines, rows = cosines.copy(), rows.copy()
        found = rows >= 0
        doc_ids = np.full(rows.shape, None, dtype=object)
        doc_ids[found] = [meta["doc_id"] for meta in self.index.rows(rows[found], ["doc_id"])]
        for query in range(len(rows)):
            seen: set[str] = set()
            for position in np.flatnonzero(found[query]):
                if doc_ids[query, position] in seen:
                    rows[query, position], cosines[query, position] = -1, -np.inf
                seen.add(doc_ids[query, position])
        return cosines, rows

    def _hits(self, scores: np.ndarray, cosines: np.ndarray | None, rows: np.ndarray, k: int) -> list[Hit]:
        """The first k candidates as hits; each document is there once (_best_chunks), so only their
        metadata is read."""
        found = rows >= 0
        scores, rows = scores[found][:k], rows[found][:k]
        cosines = cosines[found][:k] if cosines is not None else [None] * len(rows)
        hits: list[Hit] = []
        for score, cosine, meta in zip(scores, cosines, self.index.rows(rows, HIT_COLUMNS)):
            chunked = int(meta["chunks"]) > 1
            hits.append(Hit(
                rank=len(hits) + 1,
                score=float(score),
                id=str(meta["doc_id"]),
                lang=str(meta["lang"]),
                text=str(meta["text"]),
                source=str(meta["source"]),
                extra=json.loads(meta["extra"]) if meta["extra"] else {},
                chunk=int(meta["chunk"]) if chunked else None,
                span=(int(meta["start"]), int(meta["end"])) if chunked else None,
                cosine=None if cosine is None else float(cosine),
            ))
        return hits
