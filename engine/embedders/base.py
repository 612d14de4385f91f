"""The one interface every embedding backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from xlsearch.engine.profiles import ModelProfile


class Embedder(ABC):
    """Turns texts into float32, L2-normalised rows. Queries and documents may get different prompts."""

    backend: str
    model: str
    profile: ModelProfile
    requested_dim: int | None = None  # a Matryoshka cut asked for (`dim`); None for the native size

    @property
    def rejected(self) -> dict[str, str]:
        """Texts the backend could not embed (their rows are NaN), with the reason. A backend that
        never refuses an input keeps this empty."""
        return self.__dict__.setdefault("_rejected_texts", {})

    @property
    def cache_use(self) -> tuple[int, int] | None:
        """(texts embedded, texts read from the cache) so far; None for an embedder without a cache."""
        return None

    @property
    def stats(self) -> dict[str, int]:
        """Running counters for progress displays (requests, retries, rejects, tokens)."""
        return {}

    @property
    @abstractmethod
    def dim(self) -> int:
        """The dimension of the vectors returned."""

    @abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of documents, formatted with the profile's document prompt."""

    @abstractmethod
    def embed_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        """Vectors of queries, formatted with the profile's query prompt for `task`."""

    def describe(self, task: str | None = None) -> dict:
        """What an index manifest records about how its vectors were made."""
        return {
            "backend": self.backend,
            "model": self.model,
            "family": self.profile.family,
            "dim": self.dim,
            "requested_dim": self.requested_dim,
            "prompts": self.profile.prompts(task),
        }

    def close(self) -> None:
        """Release connections or threads; the default holds none."""
