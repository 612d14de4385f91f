"""An index directory: `index.faiss` (inner product over unit vectors), `meta.parquet` (one row per
vector), `vectors.npy` (the raw vectors, so corrections can be recomputed without re-embedding) and
`manifest.json`. A new version is written beside the old one and swapped in whole."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xlsearch.engine.errors import IndexMismatchError, StorageError
from xlsearch.engine.ann.faiss_index import build_faiss_index, depth_parameter, read_faiss_index, resolve_device, search
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.ann.index_types import choose_plan
from xlsearch.engine.store.manifest import FORMAT_VERSION, file_sha256, read_manifest, write_manifest
from xlsearch.engine.ranking.neutral import METHOD, STATS_FILE, LanguageStats
from xlsearch.engine.store.publish import crash_point, new_staging, publish, published
from xlsearch.engine.ranking.neighbourhoods import NEIGHBOURHOOD_FILE, document_neighbourhoods
from xlsearch.engine.vectors import sorted_unique

INDEX_FILE = "index.faiss"
META_FILE = "meta.parquet"
VECTORS_FILE = "vectors.npy"
REJECTS_FILE = "rejects.jsonl"  # inputs the embedding server refused: source, id, chunk, reason
# Hits' metadata is read a row group at a time, so a query reads a few groups, not whole columns
ROW_GROUP_ROWS = 4096
# A language filter over fewer rows than this is answered by an exact scan of just those rows, which is
# both exact and faster than asking an approximate index to skip everything else
EXACT_FILTER_ROWS = 50_000
DATA_FILES = (INDEX_FILE, META_FILE, VECTORS_FILE)  # plus STATS_FILE when ranking is language-neutral


def write_index(
    directory: Path,
    vectors: np.ndarray,
    meta: pa.Table,
    manifest_fields: dict,
    settings: IndexSettings = IndexSettings(),
    rejects: list[dict] | None = None,
) -> dict:
    """Write a whole index version and return its manifest. `vectors` are the raw unit vectors, one per
    row of `meta` (which must have at least `doc_id`, `lang`, `text`, `source`). With
    `settings.language_neutral` and two or more languages with enough documents to fit
    (LanguageStats.fit), FAISS holds the language-neutral vectors; the raw ones are kept beside. With
    margin scoring, each row's neighbourhood is computed here, once."""
    directory = Path(directory)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        staging = new_staging(directory)
    except OSError as exc:
        raise StorageError(f"cannot write index {directory}: {exc.strerror} ({exc.filename})") from None
    try:
        langs = np.asarray(meta.column("lang").to_pylist())
        languages = Counter(langs.tolist())
        searchable = vectors
        neutral = None
        stats = LanguageStats.fit(vectors, langs) if settings.language_neutral else None
        if stats is not None:
            stats.save(staging)
            searchable = stats.neutralize(vectors, langs)
            neutral = {"method": METHOD, "languages": stats.languages}
        plan = choose_plan(settings.index_type, len(searchable), searchable.shape[1], settings.storage, settings.max_memory)
        built = build_faiss_index(plan, searchable, resolve_device(settings.device))
        index, tuning = built.index, built.tuning
        try:
            faiss.write_index(index, str(staging / INDEX_FILE))
        except RuntimeError as exc:  # faiss reports a failed write (disk full, too large) this way
            raise OSError(str(exc).strip().splitlines()[-1]) from None
        crash_point("faiss")
        if settings.scoring == "margin":
            doc_ids = np.asarray(meta.column("doc_id").to_pylist(), dtype=object)
            def tuned_search(queries, k):
                return search(index, queries, k, tuning["params"], exact_vectors=lambda rows: searchable[rows])

            np.save(staging / NEIGHBOURHOOD_FILE, document_neighbourhoods(tuned_search, searchable, doc_ids))
        if "row_id" in meta.column_names:
            meta = meta.drop(["row_id"])
        meta = meta.add_column(0, "row_id", pa.array(np.arange(len(meta), dtype=np.int64)))
        pq.write_table(meta, staging / META_FILE, row_group_size=ROW_GROUP_ROWS)
        crash_point("parquet")
        np.save(staging / VECTORS_FILE, vectors)
        if rejects:
            with open(staging / REJECTS_FILE, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
        manifest = {
            "format_version": FORMAT_VERSION,
            **manifest_fields,
            "dim": int(vectors.shape[1]),
            "index_type": plan.key,
            "index": {"kind": plan.kind, "key": plan.key, "storage": plan.storage, "device": built.device,
                      "estimated_bytes": plan.estimated_bytes, "bytes": (staging / INDEX_FILE).stat().st_size,
                      **tuning},
            "metric": "inner_product",
            "count": int(len(meta)),
            "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
            "language_neutral": neutral,
            "settings": settings.to_manifest(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "checksums": {name: file_sha256(staging / name) for name in sorted(os.listdir(staging))},
            "sizes": {name: (staging / name).stat().st_size for name in sorted(os.listdir(staging))},
        }
        write_manifest(staging, manifest)
        publish(staging, directory)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"cannot write index {directory}: {exc.strerror or exc} ({exc.filename or staging}); "
                           "the previous version is unchanged") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


class IndexReader:
    """A published index, opened for search. Metadata columns are read only when first asked for."""

    def __init__(self, directory: Path) -> None:
        self.directory = published(Path(directory))
        self.manifest = read_manifest(self.directory)
        for name, size in self.manifest["sizes"].items():
            path = self.directory / name
            if not path.is_file():
                raise IndexMismatchError(f"--index {directory}: {name} is missing")
            if path.stat().st_size != size:
                raise IndexMismatchError(f"--index {directory}: {name} has {path.stat().st_size} bytes, the manifest says {size}")
        self.index = read_faiss_index(str(self.directory / INDEX_FILE))
        self.search_params = self.manifest.get("index", {}).get("params", {})
        self.approximate = depth_parameter(self.index) is not None
        self._meta = pq.ParquetFile(self.directory / META_FILE)
        self._columns: dict[str, np.ndarray] = {}
        self.language_stats = LanguageStats.load(self.directory) if self.manifest.get("language_neutral") else None
        self.settings = IndexSettings.from_manifest(self.manifest)
        # each row's neighbourhood for margin ranking; None where the index ranks by plain cosine
        self.neighbourhoods = np.load(self.directory / NEIGHBOURHOOD_FILE) if self.settings.scoring == "margin" else None
        counts = {"manifest": self.manifest["count"], INDEX_FILE: self.index.ntotal, META_FILE: self._meta.metadata.num_rows}
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise IndexMismatchError(f"--index {self.directory}: vector and metadata counts differ ({detail})")
        if self.index.d != self.manifest["dim"]:
            raise IndexMismatchError(
                f"--index {self.directory}: {INDEX_FILE} has dimension {self.index.d}, manifest says {self.manifest['dim']}"
            )

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            self._columns[name] = as_numpy(self._meta.read(columns=[name]).column(name))
        return self._columns[name]

    def table(self) -> pa.Table:
        """All metadata, without the row ids (they are positions, renumbered on every write)."""
        return self._meta.read().drop(["row_id"])

    def rejects(self) -> list[dict]:
        """Inputs the embedding server refused when this index was built (rejects.jsonl)."""
        path = self.directory / REJECTS_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def raw_vectors(self) -> np.ndarray:
        return np.load(self.directory / VECTORS_FILE, mmap_mode="r")

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Every row's vector (or those of `rows`) in the form searches compare (language-neutral where
        the index is), as float32 in memory; computed from the raw vectors, so it works whatever the
        FAISS index type."""
        raw = self.raw_vectors()
        raw = np.asarray(raw if rows is None else raw[rows], dtype=np.float32)
        if self.language_stats is None:
            return raw
        langs = self.column("lang")
        return self.language_stats.neutralize(raw, langs if rows is None else langs[rows])

    def rows(self, row_ids: np.ndarray, columns: list[str]) -> list[dict]:
        """Metadata of the given rows, in the given order. Columns not already in memory are read from
        the row groups that hold these rows only."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        picked = {name: self.column(name)[row_ids] for name in columns if name in self._columns}
        missing = [name for name in columns if name not in picked]
        if missing and len(row_ids):
            sizes = [self._meta.metadata.row_group(g).num_rows for g in range(self._meta.metadata.num_row_groups)]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            groups = np.searchsorted(starts, row_ids, side="right") - 1
            needed = sorted_unique(groups)
            table = self._meta.read_row_groups(needed.tolist(), columns=missing)
            base = np.concatenate([[0], np.cumsum([sizes[g] for g in needed])])[np.searchsorted(needed, groups)]
            positions = base + row_ids - starts[groups]
            picked.update({name: picked_values(table.column(name), positions) for name in missing})
        return [{name: picked[name][i] for name in columns} for i in range(len(row_ids))]

    def search(self, queries: np.ndarray, k: int, row_filter: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query; with `row_filter`, only among those rows, and still k of
        them whenever that many exist (the filter runs inside FAISS, not after it)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        selector = None
        if row_filter is not None:
            k = min(k, len(row_filter))
            if self.approximate and len(row_filter) <= EXACT_FILTER_ROWS:
                return self._exact_scan(queries, k, row_filter)
            selector = faiss.IDSelectorBatch(np.asarray(row_filter, dtype=np.int64))
        k = min(k, self.index.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = search(self.index, queries, k, self.search_params, selector, exact_vectors=self.vectors)
        if selector is not None and self.approximate and (ids < 0).any():
            # the probed part of an approximate index held fewer than k allowed rows: k exist, so scan them
            return self._exact_scan(queries, k, row_filter)
        return scores, ids

    def _exact_scan(self, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        scores, positions = faiss.knn(queries, self.vectors(rows), k, metric=faiss.METRIC_INNER_PRODUCT)
        return scores, np.where(positions >= 0, rows[np.maximum(positions, 0)], -1)


def as_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy without pyarrow's own conversion, which imports pandas (about a second of a
    command-line query's start-up): numbers straight from their buffers, everything else via Python."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        if column.null_count == 0:
            kind = "f" if pa.types.is_floating(column.type) else "i" if pa.types.is_signed_integer(column.type) else "u"
            dtype = np.dtype(f"{kind}{column.type.bit_width // 8}")
            parts = [np.frombuffer(c.buffers()[1], dtype=dtype, count=len(c) + c.offset)[c.offset:] for c in column.chunks]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)
    return np.array(column.to_pylist(), dtype=object)


def picked_values(column: pa.ChunkedArray, positions: np.ndarray) -> list | np.ndarray:
    """column[positions]. A few values are converted one by one: converting the whole row groups that
    hold ten hits costs more than the search that found them. One by one costs about 5x per value
    (1.1 against 0.23 us), hence the cut at a quarter. (ChunkedArray.take would import pyarrow.compute, 0.3 s.)"""
    if len(positions) * 4 < len(column):
        return [column[int(position)].as_py() for position in positions]
    return as_numpy(column)[positions]


# Manifest entries that write_index derives from the data itself; the rest describe how it was made.
DERIVED_FIELDS = {"format_version", "dim", "index_type", "metric", "count", "languages", "language_neutral",
                  "settings", "created", "checksums", "sizes"}


def rewrite_index(index: IndexReader, keep: np.ndarray, vectors: np.ndarray | None = None,
                  meta: pa.Table | None = None, rejects: list[dict] | None = None, **manifest_updates) -> dict:
    """A new version of an open index: its rows where `keep` is true, then `vectors`/`meta` appended,
    and `rejects` added to its list. Nothing is re-embedded: the raw vectors are kept, and language
    statistics are fitted again."""
    all_rejects = index.rejects() + (rejects or [])
    old_vectors = np.asarray(index.raw_vectors())[keep]
    old_meta = index.table().filter(pa.array(keep))
    if vectors is not None:
        old_vectors = np.vstack([old_vectors, vectors])
        old_meta = pa.concat_tables([old_meta, meta.cast(old_meta.schema)])
    fields = {k: v for k, v in index.manifest.items() if k not in DERIVED_FIELDS}
    fields["documents"] = len(set(old_meta.column("doc_id").to_pylist()))
    fields["rejected"] = len(all_rejects)
    fields.update(manifest_updates)
    return write_index(index.directory, old_vectors, old_meta, fields, settings=index.settings, rejects=all_rejects)
