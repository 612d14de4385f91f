"""What reranks, as one value: the server, the model, how deep the first stage fetches, and whether a
query may go without it. The CLI fills it from its --rerank-* options; the library takes it as is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Candidates the first stage hands the reranker per query. A reranker reads each candidate whole, so its
# cost grows with the depth; 50 is the common choice of retrieval pipelines (not measured here: no
# reranker model runs on this machine).
DEFAULT_DEPTH = 50


@dataclass(frozen=True)
class RerankSpec:
    endpoint: str  # the server: its base URL, or its /v1/rerank (SGLang, vLLM) or /rerank (TEI) URL
    model: str | None = None  # sent as `model` where the server wants one (vLLM); None: the server's own
    depth: int = DEFAULT_DEPTH  # first-stage candidates reranked per query (at least the hits asked for)
    optional: bool = False  # a failing reranker leaves hits in first-stage order (said in a notice)
    api_key: str | None = field(default=None, repr=False)
    # the embedding backend's rules: seconds per request, tries after the first, requests in flight
    timeout: float = 120.0
    max_retries: int = 5
    concurrency: int = 4

    def create(self, notice: Callable[[str], None]):
        """The client, telling `notice` what a user should hear (a fallback to first-stage order)."""
        from xlsearch.engine.rerank.stage import Reranker

        return Reranker(self, notice)
