"""The library's one entry point: an index directory, opened or built, searched and updated. The CLI and
the HTTP server use it as any Python caller would."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from xlsearch.engine.ann.index_types import IndexPlan
from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.errors import XLSearchError
from xlsearch.engine.profiles import resolve_task
from xlsearch.engine.search import Hit, Searcher
from xlsearch.engine.store.manifest import Manifest
from xlsearch.engine.store.publish import release_old_versions
from xlsearch.engine.store.reader import IndexReader, published_identity
from xlsearch.engine.store.settings import IndexSettings

if TYPE_CHECKING:  # the build pipeline and its readers are imported by a build only: a query never needs them
    from xlsearch.engine.rerank.spec import RerankSpec
    from xlsearch.engine.rerank.stage import Reranker
    from xlsearch.indexer.mapper import FieldMap
    from xlsearch.indexer.pipeline import BuildResult, Progress


@dataclass
class Deletion:
    manifest: Manifest
    removed: list[str]
    not_found: list[str]


class Index:
    """An index directory. Queries are embedded as its documents were (the manifest's embedder spec, its
    task included), with whatever `embedder` sets on top (servers, key, cache, another task); the embedder
    is made on first search. With `reranker`, a rerank server orders the first stage's candidates."""

    def __init__(self, reader: IndexReader, embedder: EmbedderSpec | None = None,
                 reranker: RerankSpec | None = None) -> None:
        self.reader = reader
        spec = embedder or EmbedderSpec()
        self.embedder_spec = replace(spec, task=resolve_task(spec.task)).completed_by(reader.manifest.embedder)
        self.reranker_spec = reranker
        self._embedder: Embedder | None = None
        self._reranker: Reranker | None = None
        self._searcher: Searcher | None = None
        self._refused: tuple[int, int] | None = None  # a published version refresh() could not open

    @classmethod
    def open(cls, path: str | Path, embedder: EmbedderSpec | None = None, reranker: RerankSpec | None = None) -> Index:
        return cls(IndexReader(Path(path)), embedder, reranker)

    @classmethod
    def build(
        cls,
        corpora: Sequence[str | Path],
        path: str | Path,
        embedder: EmbedderSpec | None = None,
        *,
        fields: FieldMap | None = None,
        settings: IndexSettings = IndexSettings(),
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        strict: bool = False,
        max_rejects: int | None = None,
        append: bool = False,
        progress: Progress | None = None,
        on_plan: Callable[[IndexPlan], None] | None = None,
        on_embedder: Callable[[Embedder], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
        embeddings: str | Path | None = None,
        ray: str | None = None,
    ) -> BuildResult:
        """Embed `corpora` (files, directories, hf:NAME[:CONFIG][:SPLIT]) into a new version of the index
        at `path`; with `append`, add them to the index there (an id seen again replaces its document).
        Long documents become chunks of `chunk_size` characters (default: the model's input limit)
        overlapping by `chunk_overlap`. Inputs the servers refuse are left out and listed; more than
        `max_rejects` (default: none with `strict`, else no limit) stop the build. `on_embedder` sees the
        embedder once it exists (progress displays read its counters); `on_plan` the index plan and
        `on_notice` a line worth telling (why a GPU is left unused, a task the model cannot take), both
        before any embedding. The embedder spec's `task` (a preset name or an instruction) is stored as the
        queries' task; documents are embedded without one. `embeddings` (and `ray`): from_embeddings."""
        spec = embedder or EmbedderSpec()
        spec = replace(spec, task=resolve_task(spec.task))  # a preset's instruction is what is stored
        if embeddings is not None:  # the vectors of embedding shards instead of `corpora`: from_embeddings
            return cls.from_embeddings(embeddings, path, spec, settings=settings, on_plan=on_plan, on_notice=on_notice,
                                       progress=progress, ray=ray)
        from xlsearch.indexer.mapper import FieldMap
        from xlsearch.indexer.pipeline import build_index

        made = spec.create()
        try:
            ignored = made.profile.ignored_task(spec.task)
            if ignored:  # not stored either: the index's queries are embedded as the model always does
                spec = replace(spec, task=None)
                if on_notice:
                    on_notice(ignored)
            if on_embedder:
                on_embedder(made)
            # a window of documents: enough to keep every request slot of the backend busy
            window = max(64, 2 * spec.batch_size * spec.concurrency)
            return build_index([str(c) for c in corpora], Path(path), made, spec, fields or FieldMap(), window=window,
                               progress=progress, settings=settings, chunk_size=chunk_size,
                               chunk_overlap=chunk_overlap, strict=strict, append=append, on_plan=on_plan,
                               on_notice=on_notice, max_rejects=max_rejects)
        finally:
            made.close()

    @classmethod
    def from_embeddings(cls, embeddings: str | Path, path: str | Path, embedder: EmbedderSpec | None = None, *,
                        settings: IndexSettings = IndexSettings(), on_plan: Callable[[IndexPlan], None] | None = None,
                        on_notice: Callable[[str], None] | None = None,
                        progress: Callable[..., None] | None = None, ray: str | None = None) -> BuildResult:
        """A new version of the index at `path` from embedding shards (`xlsearch embed`'s directory, or
        Parquet files of another tool with `id`, `text` and `vector`), embedding nothing. Queries are
        embedded with the model that made them: the shards' manifest says which, else `embedder` does.
        Vectors over the memory budget are indexed shard by shard, on disk; `progress` is told each
        stage's rows then: (done, total, stage), and `ray` runs the steps that go a shard at a time as Ray tasks
        ("" on a Ray started on this machine, else on the cluster at that address)."""
        from xlsearch.indexer.from_shards import build_from_embeddings

        return build_from_embeddings(Path(embeddings), Path(path), embedder or EmbedderSpec(), settings=settings,
                                     on_plan=on_plan, on_notice=on_notice, progress=progress, ray=ray)

    def append(self, corpora: Sequence[str | Path], **options) -> BuildResult:
        """Add `corpora` with this index's model and settings; the index then serves the new version."""
        result = Index.build(corpora, self.reader.target, self.embedder_spec, append=True, **options)
        self._reopen()
        return result

    def delete(self, ids: Sequence[str]) -> Deletion:
        """Remove these documents (all their chunks), re-embedding nothing."""
        from xlsearch.engine.store.updates import delete_documents

        manifest, removed, missing = delete_documents(self.reader.target, list(ids))
        self._reopen()
        return Deletion(manifest, removed, missing)

    def verify(self) -> list[str]:
        """Everything an index can be checked for, checksums included; an empty list when it is whole."""
        return Index.check(self.reader.target)

    @staticmethod
    def check(path: str | Path) -> list[str]:
        """`verify` for an index that may not open (a damaged one): its files are checked before anything
        is parsed, and each problem names its file. Raises only when there is no index (no directory,
        no readable manifest)."""
        from xlsearch.engine.store.verify import verify_index

        return verify_index(Path(path))

    @property
    def info(self) -> Manifest:
        return self.reader.manifest

    @property
    def path(self) -> Path:
        return self.reader.target

    @property
    def embedder(self) -> Embedder:
        """The query embedder, made on first use and checked against the index's model and dimension."""
        if self._embedder is None:
            self._embedder = self.embedder_spec.create()
            try:
                self.reader.check_compatible(self._embedder)
            except BaseException:
                self.close()
                raise
            ignored = self._embedder.profile.ignored_task(self.embedder_spec.task)
            if ignored:
                self._embedder.notice(ignored)
        return self._embedder

    @property
    def task(self) -> str | None:
        """The queries' task instruction: the one asked for, else the index's; None: the model's default."""
        return self.embedder_spec.task

    @property
    def reranker(self) -> Reranker | None:
        """The rerank stage, made on first use; its notices (a fallback) are the embedder's."""
        if self._reranker is None and self.reranker_spec is not None:
            self._reranker = self.reranker_spec.create(self.embedder.notice)
        return self._reranker

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = self._searcher_of(self.reader)
        return self._searcher

    def _searcher_of(self, reader: IndexReader) -> Searcher:
        return Searcher(reader, self.embedder, self.task, self.reranker)

    def search(self, query: str | Sequence[str], k: int = 10, lang: str | Sequence[str] | None = None,
               query_lang: str | None = None, task: str | None = None) -> list[Hit] | list[list[Hit]]:
        """The k best documents for a query (a list of hits), or for each of several (a list of lists).
        `lang` keeps only documents in those languages; `query_lang` is the queries' own, else detected;
        `task` (a preset name or an instruction) replaces the index's task for these queries."""
        single = isinstance(query, str)
        results = self.searcher.search([query] if single else list(query), k=k,
                                       langs=list(lang) if lang is not None and not isinstance(lang, str) else lang,
                                       query_lang=query_lang, task=resolve_task(task))
        return results[0] if single else results

    def refresh(self) -> bool:
        """Switch to the version now published at this index's path, if it is another one; True when it
        did. The switch is whole: a searcher or reader taken before it keeps answering from the version
        it was taken from. A version that cannot be opened (damaged, another model) raises once and is
        then passed over, the current one still serving, until another version is published."""
        now = published_identity(self.reader.target)
        if now is None or now in (self.reader.identity, self._refused):
            return False
        try:
            reader = IndexReader(self.reader.target)
            if self._embedder is not None:
                reader.check_compatible(self._embedder)
        except XLSearchError:
            self._refused = now
            raise
        self._switch(reader)
        return True

    def _reopen(self) -> None:
        self._switch(IndexReader(self.reader.target))

    def _switch(self, reader: IndexReader) -> None:
        # the searcher first: a thread reading `searcher` meanwhile gets the old one or the new one, never
        # a searcher of one version over the reader of another
        self._searcher = self._searcher_of(reader) if self._embedder is not None else None
        self.reader = reader
        release_old_versions(reader.target)  # the version let go, unless a searcher still holds it

    def close(self) -> None:
        if self._reranker is not None:
            self._reranker.close()
            self._reranker = None
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        self._searcher = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.info
        return f"Index({str(self.path)!r}, {m.documents} documents, {m.model}, {m.dim} dims)"
