"""Search: embed queries with the index's own model, rank by inner product, filter by language."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from pathlib import Path

from engine.embedders import create_embedder
from engine.embedders.base import Embedder
from engine.errors import IndexMismatchError
from engine.languages import normalize_lang, parse_lang_list
from engine.store import IndexReader

HIT_COLUMNS = ["doc_id", "lang", "text", "source", "extra"]


@dataclass
class Hit:
    rank: int
    score: float
    id: str
    lang: str
    text: str
    source: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k != "extra"}, **data["extra"]}


def check_compatible(index: IndexReader, embedder: Embedder) -> None:
    """Vectors of another model or dimension would rank garbage: refuse, naming both."""
    built, asked = index.manifest, (embedder.model, embedder.dim)
    if (built["model"], built["dim"]) != asked:
        raise IndexMismatchError(
            f"--index {index.directory} was built with model {built['model']!r} at {built['dim']} dims; "
            f"the query embedder is {asked[0]!r} at {asked[1]} dims"
        )


class Searcher:
    def __init__(self, index: IndexReader, embedder: Embedder) -> None:
        check_compatible(index, embedder)
        self.index = index
        self.embedder = embedder

    def language_rows(self, langs: list[str]) -> np.ndarray | None:
        if not langs:
            return None
        return np.flatnonzero(np.isin(self.index.column("lang"), langs))

    def search(
        self, queries: list[str], k: int = 10, langs: str | list[str] | None = None, query_lang: str | None = None
    ) -> list[list[Hit]]:
        """The k best documents for each query, best first. On a language-neutral index the query's
        language is `query_lang` or, when not given, its nearest language centroid."""
        vectors = self.query_vectors(self.embedder.embed_queries(queries), query_lang)
        return self.search_vectors(vectors, k, parse_lang_list(langs))

    def query_vectors(self, raw: np.ndarray, query_lang: str | None = None) -> np.ndarray:
        """Raw query vectors in the form the index holds."""
        stats = self.index.language_stats
        if stats is None:
            return raw
        langs = [normalize_lang(query_lang)] * len(raw) if query_lang else stats.detect(raw)
        return stats.neutralize(raw, langs)

    def search_vectors(self, vectors: np.ndarray, k: int, langs: list[str]) -> list[list[Hit]]:
        scores, rows = self.index.search(vectors, k, self.language_rows(langs))
        return [self._hits(s, r) for s, r in zip(scores, rows)]

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        found = rows >= 0
        scores, rows = scores[found], rows[found]
        metas = self.index.rows(rows, HIT_COLUMNS)
        return [
            Hit(
                rank=rank,
                score=float(score),
                id=str(meta["doc_id"]),
                lang=str(meta["lang"]),
                text=str(meta["text"]),
                source=str(meta["source"]),
                extra=json.loads(meta["extra"]) if meta["extra"] else {},
            )
            for rank, (score, meta) in enumerate(zip(scores, metas), start=1)
        ]


def open_searcher(
    index_dir: Path,
    *,
    backend: str | None = None,
    model: str | None = None,
    dim: int | None = None,
    family: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    cache_path: Path | None = None,
) -> Searcher:
    """A searcher whose query embedder is the one the index was built with, unless told otherwise."""
    index = IndexReader(index_dir)
    built = index.manifest
    backend = backend or built["backend"]
    same_backend = backend == built["backend"]
    embedder = create_embedder(
        backend,
        model=model or (built["model"] if same_backend else None),
        dim=dim or built.get("requested_dim"),
        family=family or (built.get("family") if same_backend and backend == "openai" else None),
        endpoint=endpoint or (built.get("endpoint") if same_backend else None),
        api_key=api_key,
        cache_path=cache_path,
    )
    return Searcher(index, embedder)
