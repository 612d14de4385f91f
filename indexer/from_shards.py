"""`index --embeddings`: an index version from embedding shards, embedding nothing. The shards are `embed`'s
(its manifest says which model made them and is checked against every shard) or Parquet files of another
tool (`id`, `text` and `vector` required; the model that embeds queries named by the caller). The vectors
are loaded into memory here, unless they are over the memory budget: then they are indexed a shard at a
time (engine.store.out_of_core)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xlsearch.engine.ann.index_types import IndexPlan
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.errors import IndexMismatchError, InputError
from xlsearch.engine.languages import detect_lang, normalize_lang
from xlsearch.engine.profiles import profile_for
from xlsearch.engine.store.out_of_core import (InProcess, Progress, SegmentRunner, Shard, document_keys,
                                                write_index_out_of_core)
from xlsearch.engine.store.publish import writer_lock
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.writer import Provenance, write_index
from xlsearch.engine.vectors import normalize_rows
from xlsearch.indexer.chunking import ChunkPolicy
from xlsearch.indexer.mapper import MappingReport
from xlsearch.indexer.pipeline import BuildResult, planned_build
from xlsearch.indexer.shard_files import SHARD_SUFFIX, file_sha256, read_manifest, shard_own

REQUIRED = ("id", "text", "vector")
READ_BATCH_ROWS = 8192


@dataclass
class Shards:
    """Every row of the shards, as the index's writer takes them."""

    meta: pa.Table
    vectors: np.ndarray
    rejects: list[dict]
    report: MappingReport


def _files(path: Path, manifest: dict | None) -> list[Path]:
    """The shards to read: those `embed`'s manifest lists (checked against its checksums), else every
    Parquet file of the directory, or the one file given."""
    if not path.exists():
        raise InputError("no such file or directory", field="embeddings", value=path)
    if manifest is None:
        files = sorted(path.glob(f"*{SHARD_SUFFIX}")) if path.is_dir() else [path]
        if not files:
            raise InputError("no Parquet files here", field="embeddings", value=path)
        return files
    if not manifest.get("complete"):
        raise InputError(f"the embed job that writes here has not finished ({len(manifest.get('shards', []))} shards "
                         "so far): run the same `embed` again to finish it", field="embeddings", value=path)
    files = []
    for shard in manifest["shards"]:
        file = path / shard["name"]
        if not file.is_file():
            raise InputError(f"{shard['name']} is missing (listed in manifest.json)", field="embeddings", value=path)
        if file_sha256(file) != shard["sha256"]:
            raise InputError(f"{shard['name']} does not match its checksum in manifest.json (changed or damaged)",
                             field="embeddings", value=path)
        files.append(file)
    return files


def _vectors(table: pa.Table, file: Path) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise InputError(f"{file}: column 'vector' must be a list of numbers, got {column.type}")
    if column.null_count:
        raise InputError(f"{file}: {column.null_count} rows have no vector")
    lengths = set(pc.list_value_length(column).to_pylist())
    if len(lengths) > 1:
        raise InputError(f"{file}: vectors of different dimensions ({', '.join(map(str, sorted(lengths)))})")
    dim = lengths.pop() if lengths else 0
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = values.reshape(len(table), dim)
    if not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InputError(f"{file}: the vector of {table.column('id')[row].as_py()!r} is not finite")
    return matrix


def _meta(table: pa.Table, file: Path, report: MappingReport) -> pa.Table:
    """The index's metadata columns from a shard's: what another tool's file lacks, filled in (its
    language detected from the text)."""
    rows = len(table)
    texts = [t or "" for t in table.column("text").to_pylist()]
    if "lang" in table.column_names:
        try:
            langs = [normalize_lang(code) if code else detect_lang(text) for code, text in zip(table.column("lang").to_pylist(), texts)]
        except InputError as exc:
            raise InputError(f"{file}: {exc}") from None
    else:
        langs = [detect_lang(text) for text in texts]
        report.detected_languages += rows

    def column(name: str, default: list, kind: pa.DataType) -> pa.Array:
        return table.column(name).cast(kind) if name in table.column_names else pa.array(default, kind)

    return pa.table({
        "doc_id": table.column("id").cast(pa.string()), "lang": pa.array(langs, pa.string()),
        "text": pa.array(texts, pa.string()), "source": column("source", [str(file)] * rows, pa.string()),
        "chunk": column("chunk", [0] * rows, pa.int32()), "chunks": column("chunks", [1] * rows, pa.int32()),
        "start": column("start", [0] * rows, pa.int64()), "end": column("end", [len(t) for t in texts], pa.int64()),
        "extra": column("extra", [""] * rows, pa.string()),
    })


class ShardReader:
    """Shards read one at a time, in file order; a document id met again in a later file keeps its first,
    as `index` does with corpora (a row repeated within a file, the same id and chunk, too). What each
    leaves out is counted in `report`."""

    def __init__(self, report: MappingReport) -> None:
        self.report = report
        self._seen = np.zeros(0, np.int64)  # document_keys of the files read, sorted
        self.dims: dict[int, Path] = {}

    def read(self, file: Path) -> Shard:
        try:
            # record batches, not the whole file at once: a 50,000 x 384 shard (77 MB) took 583 MB at its
            # peak read whole (Parquet's nested-list decoding), 361 MB this way
            parquet = pq.ParquetFile(file)
            table = pa.Table.from_batches(list(parquet.iter_batches(batch_size=READ_BATCH_ROWS)), schema=parquet.schema_arrow)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{file}: unreadable Parquet ({exc})") from None
        missing = [name for name in REQUIRED if name not in table.column_names]
        if missing:
            raise InputError(f"{file}: no column {', '.join(map(repr, missing))} (needs {', '.join(REQUIRED)})")
        vectors = _vectors(table, file)
        if len(table):
            self.dims.setdefault(vectors.shape[1], file)
        if len(self.dims) > 1:
            (dim_a, file_a), (dim_b, file_b) = list(self.dims.items())[:2]
            raise IndexMismatchError(f"{file_a} has vectors of {dim_a} dims, {file_b} of {dim_b}", field="embeddings")
        meta = _meta(table, file, self.report)
        keys = document_keys(meta.column("doc_id"))
        at = np.searchsorted(self._seen, keys)
        earlier = self._seen[np.minimum(at, len(self._seen) - 1)] == keys if len(self._seen) else np.zeros(len(keys), bool)
        here, keep = set(), []
        for doc_id, chunk, seen in zip(meta.column("doc_id").to_pylist(), meta.column("chunk").to_pylist(), earlier):
            keep.append(not seen and (doc_id, chunk) not in here)
            here.add((doc_id, chunk))
        new = np.unique(keys[~earlier])
        self._seen = np.insert(self._seen, np.searchsorted(self._seen, new), new)  # a merge, not a sort of all of them
        skipped = Counter()
        dropped = len(keep) - sum(keep)
        if dropped:
            skipped["duplicate id"] += dropped
            meta, vectors, keys = meta.filter(pa.array(keep)), vectors[np.asarray(keep)], keys[np.asarray(keep)]
        own, _ = shard_own(file)
        skipped.update(own.get("skipped", {}))
        self.report.skipped.update(skipped)
        return Shard(meta, normalize_rows(vectors), [dict(r, shard=file.name) for r in own.get("rejects", [])], skipped,
                     doc_keys=keys)


def read_shards(files: list[Path], report: MappingReport) -> Shards:
    """Every shard's rows in file order (ShardReader), in memory."""
    reader = ShardReader(report)
    shards = [reader.read(file) for file in files]
    meta = pa.concat_tables([shard.meta for shard in shards])
    report.indexed = len(set(meta.column("doc_id").to_pylist()))
    if not len(meta):
        raise InputError("no vectors in the embeddings", field="embeddings", value=files[0].parent)
    return Shards(meta, np.vstack([shard.vectors for shard in shards]), [r for shard in shards for r in shard.rejects],
                  report)


def _shape(files: list[Path], manifest: dict | None) -> tuple[int, int]:
    """(rows, dimension) of the shards from their footers and the first vector, before reading them."""
    rows = sum(shard_own(file)[1] for file in files)
    if manifest is not None:
        return rows, int(manifest["dim"])
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
            if parquet.metadata.num_rows:
                first = parquet.read_row_group(0, columns=["vector"]).column("vector")[0].as_py()
                return rows, len(first or [])
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise InputError(f"{file}: unreadable Parquet ({exc})") from None
    raise InputError("no vectors in the embeddings", field="embeddings", value=files[0].parent)


def _check_shards_model(files: list[Path], manifest: dict) -> None:
    """Shards made by another model or at another dimension than the manifest says: named, both."""
    for file in files:
        own, _ = shard_own(file)
        if (own.get("model"), own.get("dim")) != (manifest["model"], manifest["dim"]):
            raise IndexMismatchError(f"{file.name} was embedded with {own.get('model')!r} at {own.get('dim')} dims; the manifest "
                                     f"says {manifest['model']!r} at {manifest['dim']} dims", field="embeddings", value=file.parent)


def _described(manifest: dict | None, asked: EmbedderSpec, dim: int, path: Path) -> tuple[EmbedderSpec, dict]:
    """The spec that will embed queries and what the index records of the model: `embed`'s manifest,
    or, for another tool's shards, the model `asked` for, made here to check its dimension."""
    if manifest is not None:
        built = EmbedderSpec.from_manifest(manifest["embedder"], cache=None)
        for name, theirs in (("model", manifest["model"]), ("dim", manifest["dim"])):
            mine = getattr(asked, name)
            if mine is not None and mine != theirs:
                raise IndexMismatchError(f"were embedded with {manifest['model']!r} at {manifest['dim']} dims; "
                                         f"`{name}` asks for {mine!r}", field="embeddings", value=path)
        spec = replace(asked, api_key=None, cache=None).completed_by(built)
        # the documents' prompt is the one they were embedded with; the queries' is the index's task's
        queries = profile_for(manifest["model"], manifest["family"]).prompts(spec.task)["query"]
        return spec, {"model": manifest["model"], "family": manifest["family"],
                      "prompts": {**manifest["prompts"], "query": queries},
                      "chunking": manifest["chunking"], "corpora": manifest["corpora"]}
    made = replace(asked, cache=None).create()
    try:
        if made.dim != dim:
            raise IndexMismatchError(f"has vectors of {dim} dims; {made.model!r} (the query model: `backend`, `model`, "
                                     f"`dim`) gives {made.dim}", field="embeddings", value=path)
        return replace(asked, api_key=None, cache=None).resolved(made), {
            "model": made.model, "family": made.profile.family, "prompts": made.describe(asked.task)["prompts"],
            "chunking": ChunkPolicy.for_embedder(made).record(), "corpora": [str(path)]}
    finally:
        made.close()


def build_from_embeddings(path: Path, index_dir: Path, asked: EmbedderSpec = EmbedderSpec(),
                          settings: IndexSettings = IndexSettings(),
                          on_plan: Callable[[IndexPlan], None] | None = None,
                          on_notice: Callable[[str], None] | None = None,
                          progress: Progress | None = None, ray: str | None = None) -> BuildResult:
    """A new version of the index at `index_dir` holding the vectors of the shards at `path` (a directory
    or one Parquet file), queried with the model that made them. Over the memory budget, shard by shard
    (engine.store.out_of_core, `progress` told each stage's rows), its segment steps run on Ray with
    `ray` ("" a local Ray, else a cluster's address); else in memory."""
    path, index_dir = Path(path), Path(index_dir)
    manifest = read_manifest(path) if path.is_dir() else None
    files = _files(path, manifest)
    if manifest is not None:
        _check_shards_model(files, manifest)
    rows, dim = _shape(files, manifest)
    spec, described = _described(manifest, asked, dim, path)
    report = MappingReport()
    provenance = Provenance(embedder=spec, model=described["model"], family=described["family"],
                            prompts=described["prompts"], corpora=described["corpora"], chunking=described["chunking"],
                            skipped={})
    with writer_lock(index_dir):
        device, plans = planned_build(settings, rows, dim, on_plan, on_notice, out_of_core=True)
        if ray is not None and not plans[0].on_disk and on_notice:
            on_notice("the vectors fit the memory budget: indexed in memory in this process, not on Ray")
        if plans[0].on_disk:
            reader = ShardReader(report)
            with _runner(ray) as runner:
                written, rejects = write_index_out_of_core(index_dir, (reader.read(file) for file in files),
                                                           provenance, plans, settings=settings, progress=progress,
                                                           runner=runner, device=device.device)
            report.indexed = written.documents
        else:
            shards = read_shards(files, report)
            provenance = replace(provenance, skipped=dict(report.skipped))
            written = write_index(index_dir, shards.vectors, shards.meta, provenance, plans, settings=settings,
                                  rejects=shards.rejects, device=device.device)
            rejects = shards.rejects
    return BuildResult(manifest=written, report=report, rejects=rejects, embedded=0, from_cache=0, failed_servers={})


def _runner(ray: str | None) -> contextlib.AbstractContextManager[SegmentRunner]:
    if ray is None:
        return contextlib.nullcontext(InProcess())
    from xlsearch.indexer.ray_index import on_ray  # Ray only where asked for

    return on_ray(ray)
