"""`embed`: corpora to embedding shards in a directory, resumable and idempotent. The job is planned here
(its input files, how they are cut into shards, what is already done) and run either in this process
or on Ray (indexer.ray_runner); either way each shard is published whole as it is finished, and the
manifest is written again from the shards as they come."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.errors import InputError, StorageError
from xlsearch.engine.store.publish import IndexBusyError, writer_lock
from xlsearch.indexer.chunking import ChunkPolicy
from xlsearch.indexer.embed_parts import check_refusals, describe_skipped, embed_part, read_parts, write_part
from xlsearch.indexer.mapper import FieldMap
from xlsearch.indexer.pipeline import Progress, count_chunks
from xlsearch.indexer.readers import HF_PREFIX, corpus_files
from xlsearch.indexer.shard_files import (FORMAT_VERSION, ShardRecord, published_shards, read_manifest,
                                          read_shard_record, remove_aside, write_manifest)

# Documents per shard: what a killed job loses at most per shard in flight, and a file per that many.
# 10,000 short documents are 16 MB at 384 dims (100 MB at 2,560), a few minutes of the local model here and
# seconds of a GPU server.
SHARD_DOCUMENTS = 10_000
REJECTS = "rejects.jsonl"
# The manifest is written again at most this often while a job runs (and at its end): the shards are the
# record a re-run reads, the manifest only shows progress, and rewriting every entry after each of
# 100,000 shards would write 5 billion entries
MANIFEST_EVERY_S = 10.0
# What a re-run must share with the job that wrote the shards already there, else they are another job's
_SAME_JOB = ("model", "dim", "prompts", "chunking", "fields", "shard_documents", "inputs")


@dataclass(frozen=True)
class JobPlan:
    """What a job embeds and how, the same in every run of it; the ray runner ships it to its workers."""

    inputs: tuple[tuple[int, str], ...]  # (number, file or hf:NAME), in corpus order
    spec: EmbedderSpec
    fields: FieldMap
    policy: ChunkPolicy
    shard_documents: int
    window: int
    limit: int | None  # refused inputs the job may leave out; None: any number
    strict: bool


@dataclass
class EmbedResult:
    directory: Path
    manifest: dict
    shards: list[ShardRecord]
    written: list[str]  # shards this run wrote (the others were there already)
    failed_servers: dict[str, str]

    @property
    def rejects(self) -> list[dict]:
        return [dict(r, shard=s.name) for s in self.shards for r in s.rejects]


def input_files(corpora: list[str]) -> tuple[tuple[int, str], ...]:
    """The job's input files, numbered: each file of each corpus (a directory's in a stable order); an
    `hf:` dataset is one input."""
    files: list[str] = []
    for corpus in corpora:
        files += [corpus] if corpus.startswith(HF_PREFIX) else [str(p) for p in corpus_files(Path(corpus))]
    return tuple(enumerate(files))


def run_in_process(plan: JobPlan, directory: Path, done: frozenset[str], embedder: Embedder,
                   progress: Callable[[int], None]) -> Iterator[tuple[ShardRecord, dict[str, str]]]:
    """Each shard not yet published, read, embedded and written here, one after the other."""
    for number, corpus in plan.inputs:
        for part in read_parts(number, corpus, plan.fields, plan.policy, plan.shard_documents, done):
            embedded = embed_part(embedder, part, plan.window, plan.limit, plan.strict, progress)
            yield write_part(directory, embedded), embedded.failed_servers


def _job(plan: JobPlan, embedder: Embedder, corpora: list[str]) -> dict:
    described = embedder.describe()
    return {
        "format_version": FORMAT_VERSION, "model": embedder.model, "dim": embedder.dim, "backend": embedder.backend,
        "family": embedder.profile.family, "prompts": described["prompts"],
        "embedder": plan.spec.resolved(embedder).to_manifest(),
        "chunking": plan.policy.record(),
        "fields": {"text": plan.fields.text_field, "id": plan.fields.id_field, "lang": plan.fields.lang_field,
                   "default_lang": plan.fields.lang},
        "shard_documents": plan.shard_documents, "corpora": corpora, "inputs": [c for _, c in plan.inputs],
    }


def _check_same_job(directory: Path, job: dict) -> dict | None:
    """The manifest a run of this job left here, if any. Shards of another job (another model, cut,
    corpus) must not be mixed with this one's."""
    before = read_manifest(directory)
    if before is None:
        if published_shards(directory):
            raise InputError("holds embedding shards but no manifest.json (not written by `embed`); "
                             "choose an empty directory", field="out", value=directory)
        return None
    for key in _SAME_JOB:
        if before.get(key) != job[key]:
            raise InputError(f"holds shards of another job ({key} {before.get(key)!r}, this run {job[key]!r}); "
                             "re-run with what made them, or choose another directory", field="out", value=directory)
    return before


def _manifest(job: dict, records: list[ShardRecord], complete: bool) -> dict:
    return {
        **job, "complete": complete, "count": sum(r.rows for r in records),
        "documents": sum(r.documents for r in records), "rejected": sum(len(r.rejects) for r in records),
        "skipped": describe_skipped(records), "shards": [r.to_manifest() for r in records],
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_rejects(directory: Path, records: list[ShardRecord]) -> None:
    path = directory / REJECTS
    lines = [json.dumps({**r, "shard": s.name}, ensure_ascii=False) + "\n" for s in records for r in s.rejects]
    if lines:
        path.write_text("".join(lines), encoding="utf-8")
    else:
        path.unlink(missing_ok=True)


def embed_corpora(
    corpora: list[str],
    directory: Path,
    spec: EmbedderSpec = EmbedderSpec(),
    fields: FieldMap = FieldMap(),
    *,
    shard_documents: int = SHARD_DOCUMENTS,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    strict: bool = False,
    max_rejects: int | None = None,
    ray: str | None = None,
    actors: int | None = None,
    progress: Progress | None = None,
    on_embedder: Callable[[Embedder], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> EmbedResult:
    """Embed `corpora` into shards in `directory`, or finish the job a killed run of the same began there
    (shards already published are kept; the rest are made). `ray`: run on Ray Data, "" for a local Ray
    on this machine or a cluster's address, with `actors` embedding (default: a CPU each for the local
    model, one per server for the openai backend); None: in this process. Inputs the servers refuse are
    left out and recorded by their shard; more than `max_rejects` (default: none with `strict`, else no
    limit) stop the job, the shards finished until then kept."""
    directory = Path(directory)
    limit = max_rejects if max_rejects is not None else (0 if strict else None)
    made = spec.create()
    try:
        if on_embedder:
            on_embedder(made)
        if on_notice:
            made.listen(on_notice)
        policy = ChunkPolicy.for_embedder(made, chunk_size, chunk_overlap)  # as `index` chunks
        window = max(64, 2 * spec.batch_size * spec.concurrency)  # as `index`: every request slot busy
        plan = JobPlan(input_files(corpora), spec, fields, policy, shard_documents, window, limit, strict)
        job = _job(plan, made, corpora)
        try:
            with writer_lock(directory):
                return _run(plan, job, directory, made, ray, actors, progress)
        except IndexBusyError as exc:
            raise IndexBusyError(exc.message, field="out", value=directory) from None
    finally:
        made.close()


def _run(plan: JobPlan, job: dict, directory: Path, embedder: Embedder, ray: str | None, actors: int | None,
         progress: Progress | None) -> EmbedResult:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write embeddings: {exc.strerror}", field="out", value=directory) from None
    before = _check_same_job(directory, job)
    remove_aside(directory)
    listed = {entry["name"]: entry for entry in (before or {}).get("shards", [])}
    records = {name: read_shard_record(path, listed.get(name)) for name, path in published_shards(directory).items()}
    write_manifest(directory, _manifest(job, sorted(records.values(), key=lambda r: r.name), complete=False))
    written_at = time.monotonic()
    planned = count_chunks([c for _, c in plan.inputs], plan.fields, plan.policy)
    written, failed, refused = [], {}, [r for s in records.values() for r in s.rejects]
    state = {"chunks": sum(r.rows + len(r.rejects) for r in records.values())}

    def advance(chunks: int) -> None:
        state["chunks"] += chunks
        if progress:
            progress(state["chunks"], max(planned, state["chunks"]))

    advance(0)
    check_refusals(refused, plan.limit, plan.strict)  # a re-run under the limit that stopped the first
    done = frozenset(records)
    if ray is None:
        shards = run_in_process(plan, directory, done, embedder, advance)
    else:
        from xlsearch.indexer.ray_runner import run_on_ray

        shards = run_on_ray(plan, directory, done, ray, actors, advance)
    for record, failed_servers in shards:
        records[record.name] = record
        written.append(record.name)
        failed.update(failed_servers)
        refused += record.rejects
        if time.monotonic() - written_at > MANIFEST_EVERY_S:
            write_manifest(directory, _manifest(job, sorted(records.values(), key=lambda r: r.name), complete=False))
            written_at = time.monotonic()
        check_refusals(refused, plan.limit, plan.strict)
    ordered = sorted(records.values(), key=lambda r: r.name)
    _write_rejects(directory, ordered)
    manifest = _manifest(job, ordered, complete=True)
    write_manifest(directory, manifest)
    return EmbedResult(directory, manifest, ordered, written, failed)

