"""A published index version, opened for search, through its directory as found then, pinned by a
descriptor that holds a shared lock on it for the reader's life: its lease. A writer removes a version
moved aside only while it holds that lock exclusively (engine.store.publish), so a reader's files stay
while it lives. When the reader is made it reads the manifest, the FAISS index and the small files; a
segment's files are opened when first read (engine.store.mapped), through the same directory, so the
cost of an open does not grow with the segments. A publish that renames directories meanwhile can
neither mix two versions in one reader nor take a file from under it: a reader answers from its version
whole.

Rows live in segments (engine.store.files): a full build writes one, each update adds one. Rows an update
deleted stay in the segments and in FAISS, listed in deleted.npy; the reader numbers the rows that remain
0..count-1 ("positions", what every caller sees) and keeps FAISS from answering with the others."""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xlsearch.engine.ann.faiss_index import depth_parameter, neighbourhood_params, read_faiss_index, search
from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import IndexMismatchError, InputError, XLSearchError
from xlsearch.engine.ranking.neighbourhoods import NEIGHBOURHOOD_FILE
from xlsearch.engine.ranking.neutral import STATS_FILE, LanguageStats
from xlsearch.engine.store.files import DELETED_FILE, INDEX_FILE, REJECTS_FILE
from xlsearch.engine.store.manifest import MANIFEST_FILE, Manifest, file_sha256, parse_manifest
from xlsearch.engine.store.mapped import arrow_mapped_file, mapped_file, vectors_of
from xlsearch.engine.store.publish import IndexBusyError, published, real_path
from xlsearch.engine.vectors import sorted_unique

# A language filter over fewer rows than this is answered by an exact scan of just those rows, which is
# both exact and faster than asking an approximate index to skip everything else
EXACT_FILTER_ROWS = 50_000
# Files of up to this many bytes in all (the manifest's files in order, each that still fits) have their
# checksums checked at every open, so damage to them is named at once rather than parsed: sha256 reads
# about 1.5 GB/s here, 8 MiB costs ~5 ms, a tenth of a cold query's start-up. In all, not each: 500
# segments' metadata files checked one by one took 61 ms of a 283 ms cold query at 5M rows. Each file
# counts as at least CHECKED_FILE_BYTES: opening and reading one (about 35 us) costs what hashing that
# much does, so 500 small files cannot take the place of 8 MiB. The rest (the FAISS index, vectors, the
# other segments) are checked by `verify`, and parsed with care.
CHECKED_AT_OPEN_BYTES, CHECKED_FILE_BYTES = 8 << 20, 64 << 10
# Opening is tried again when the version being opened was replaced and removed meanwhile; each try
# finds the newer version, so only a writer publishing without pause exhausts these.
OPEN_TRIES = 50

T = TypeVar("T")


@dataclass(frozen=True)
class PinnedVersion:
    """One version's directory held open. Names are looked up in that directory wherever a publish moves
    it, and only there: a file of another version is never read in its place."""

    target: Path  # the index's real path
    directory: Path  # where the version was found: the target, or a version a publish moved aside
    fd: int

    @property
    def files(self) -> Path:
        """The pinned directory as a path (Linux's /proc: the directory itself, not a name for it)."""
        return Path(f"/proc/self/fd/{self.fd}")

    @property
    def identity(self) -> tuple[int, int]:
        stat = os.fstat(self.fd)
        return stat.st_dev, stat.st_ino

    def is_current(self) -> bool:
        return published_identity(self.target) == self.identity


def published_identity(target: Path) -> tuple[int, int] | None:
    """(device, inode) of the version directory now published at `target`: every publish makes a new
    directory, so this changes exactly when a new version is published. None while there is none."""
    try:
        stat = os.stat(published(target))
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def open_version(directory: Path, load: Callable[[PinnedVersion], T]) -> T:
    """`load` applied to the version published at `directory`, pinned. When it fails because a publish
    replaced that version meanwhile (its files removed under it), it is applied to the new one."""
    target = real_path(directory)
    for _ in range(OPEN_TRIES):
        found = published(target)
        try:
            fd = os.open(found, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if published(target).exists():
                continue  # renamed between the look-up and the open
            raise InputError("no such index directory", field="index", value=directory) from None
        except NotADirectoryError:
            raise InputError("not a directory", field="index", value=directory) from None
        except PermissionError as exc:
            raise InputError(f"cannot read it ({exc.strerror})", field="index", value=directory) from None
        version = PinnedVersion(target, found, fd)
        try:
            # the lease, before anything is read: waits while a writer removes this version (then found gone)
            fcntl.flock(fd, fcntl.LOCK_SH)
            return load(version)
        except Exception as exc:
            if not version.is_current():
                continue  # its files were removed under it: the version published since is whole
            if isinstance(exc, OSError):  # not a damaged file: one the system would not let us read
                name = str(exc.filename or found).replace(str(version.files), str(found))
                raise InputError(f"cannot read {name}: {exc.strerror or exc}", field="index", value=directory) from None
            raise
        finally:
            os.close(fd)
    raise IndexBusyError(f"was replaced by {OPEN_TRIES} publishes in a row while being opened", field="index",
                         value=directory)


def read_pinned_manifest(version: PinnedVersion) -> tuple[Manifest, bytes]:
    try:
        data = (version.files / MANIFEST_FILE).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(f"not an xlsearch index (no {MANIFEST_FILE})", field="index", value=version.directory) from None
    return parse_manifest(data, version.directory / MANIFEST_FILE), data


def file_problems(version: PinnedVersion, manifest: Manifest, checked_bytes: int | None) -> list[str]:
    """Each file of the manifest that is missing, of another size, or of another checksum, named with
    what is wrong. Checksums of all files (`checked_bytes` None), or of files in the manifest's order
    while they add up to at most `checked_bytes`."""
    problems, budget = [], checked_bytes
    for name, size in manifest.sizes.items():
        try:
            actual = os.stat(name, dir_fd=version.fd).st_size
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        if actual != size:
            problems.append(f"{name} has {actual} bytes, the manifest says {size}")
        elif name in manifest.checksums and (budget is None or max(size, CHECKED_FILE_BYTES) <= budget):
            budget = None if budget is None else budget - max(size, CHECKED_FILE_BYTES)
            digest = file_sha256(version.files / name)
            if digest != manifest.checksums[name]:
                problems.append(f"{name}: sha256 {digest[:12]}… differs from the manifest's "
                                f"{str(manifest.checksums[name])[:12]}…: the file is damaged")
    return problems


class IndexReader:
    """A published index, opened for search. Metadata columns are read only when first asked for; the
    reader may be shared by threads."""

    def __init__(self, directory: Path) -> None:
        open_version(Path(directory), lambda version: self._load(version, CHECKED_AT_OPEN_BYTES))

    @classmethod
    def from_version(cls, version: PinnedVersion, checked_bytes: int | None) -> IndexReader:
        """The reader of a version already pinned, its files up to `checked_bytes` checksummed (None: all)."""
        reader = cls.__new__(cls)
        reader._load(version, checked_bytes)
        return reader

    def _load(self, version: PinnedVersion, checked_bytes: int | None) -> None:
        self.target, self.directory, self.identity = version.target, version.directory, version.identity
        self._pinned = str(version.files)  # in parsers' messages, named as the directory instead
        self.manifest, manifest_bytes = read_pinned_manifest(version)
        # which version this is, for a server to report: changes with any file (checksums) and every build (created)
        self.version = hashlib.sha256(manifest_bytes).hexdigest()[:16]
        problems = file_problems(version, self.manifest, checked_bytes)
        if problems:
            raise IndexMismatchError(problems[0] + "; `xlsearch verify` checks every file", field="index", value=self.directory)
        files = version.files
        with self._reading(INDEX_FILE):
            self.index = read_faiss_index(str(files / INDEX_FILE), on_disk=bool(self.manifest.index.get("on_disk")))
        self.search_params = self.manifest.index.get("params", {})
        self.neighbourhood_params = neighbourhood_params(self.manifest.index)  # margin's, searched by updates
        self.approximate = depth_parameter(self.index) is not None
        # the version's directory, and its lease, held for this reader's life; each segment's files opened,
        # mapped and parsed when first read through it (engine.store.mapped)
        self._directory_fd = os.dup(version.fd)
        weakref.finalize(self, os.close, self._directory_fd)
        self._meta: list[pq.ParquetFile | None] = [None] * len(self.manifest.segments)  # by _parquet
        self._raw: list[np.ndarray | None] = [None] * len(self.manifest.segments)  # by _vectors
        self._starts = np.cumsum([0] + [segment["rows"] for segment in self.manifest.segments])  # first row of each
        self._meta_lock = threading.Lock()  # one reader of the Parquet files at a time: pyarrow's is not shared-safe
        self._columns: dict[str, np.ndarray] = {}  # by position
        self._row_columns: dict[str, np.ndarray] = {}  # by row, deleted rows included
        self.settings = self.manifest.settings
        with self._reading(STATS_FILE):
            self.language_stats = LanguageStats.load(files) if self.manifest.language_neutral else None
        with self._reading(DELETED_FILE):
            self._deleted = (np.load(files / DELETED_FILE, allow_pickle=False) if self.manifest.deleted
                             else np.zeros(0, np.int64))
        # position -> row where rows were deleted (None: positions are rows); FAISS skips the deleted ones
        self._kept, self._skip_deleted = None, None
        if len(self._deleted):
            kept = np.ones(int(self._starts[-1]), bool)
            kept[self._deleted[(self._deleted >= 0) & (self._deleted < len(kept))]] = False
            self._kept = np.flatnonzero(kept)
            self._deleted_ids = faiss.IDSelectorBatch(self._deleted)  # held: the selector below points to it
            self._skip_deleted = faiss.IDSelectorNot(self._deleted_ids)
        # each position's neighbourhood for margin ranking; None where the index ranks by plain cosine
        self.neighbourhoods = None
        if self.settings.uses_neighbourhoods:
            with self._reading(NEIGHBOURHOOD_FILE):
                # mapped: a query reads its hits' (20 MB a 5M index, read whole at every open before)
                self.neighbourhoods = np.load(files / NEIGHBOURHOOD_FILE, mmap_mode="r", allow_pickle=False)
        with self._reading(REJECTS_FILE):
            self._rejects = open(files / REJECTS_FILE, "rb") if REJECTS_FILE in self.manifest.sizes else None
        self._check_shapes()
        if self.neighbourhoods is not None and self._kept is not None:
            self.neighbourhoods = self.neighbourhoods[self._kept]

    def _check_shapes(self) -> None:
        rows = int(self._starts[-1])
        counts = {"manifest": self.manifest.count + self.manifest.deleted, INDEX_FILE: self.index.ntotal, "segments": rows}
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise IndexMismatchError(f"vector and metadata counts differ ({detail})", field="index", value=self.directory)
        if self.index.d != self.manifest.dim:
            raise IndexMismatchError(
                f"{INDEX_FILE} has dimension {self.index.d}, manifest says {self.manifest.dim}", field="index", value=self.directory
            )
        expected = [(DELETED_FILE, self._deleted.shape, (self.manifest.deleted,))]
        if self.neighbourhoods is not None:
            expected += [(NEIGHBOURHOOD_FILE, self.neighbourhoods.shape, (rows,))]
        for name, shape, wanted in expected:
            if shape != wanted:
                raise IndexMismatchError(f"{name} has shape {shape}, expected {wanted}", field="index", value=self.directory)
        if len(self._deleted) and (np.any(np.diff(self._deleted) <= 0) or self._deleted[0] < 0 or self._deleted[-1] >= rows):
            raise IndexMismatchError(f"{DELETED_FILE} does not list distinct rows of the index", field="index",
                                     value=self.directory)

    def _mapped(self, name: str) -> mmap.mmap:
        return mapped_file(self._directory_fd, name, self.manifest.sizes[name])

    def _vectors(self, number: int) -> np.ndarray:
        """Segment `number`'s raw vectors, mapped when first asked for."""
        if self._raw[number] is None:
            segment = self.manifest.segments[number]
            with self._reading(segment["vectors"]):
                self._raw[number] = vectors_of(self._mapped(segment["vectors"]), segment["rows"], self.manifest.dim)
        return self._raw[number]

    def _parquet(self, number: int) -> pq.ParquetFile:
        """Segment `number`'s metadata file, its footer parsed (and its rows counted) when first asked for."""
        if self._meta[number] is None:
            segment = self.manifest.segments[number]
            with self._reading(segment["meta"]):
                name = segment["meta"]
                meta = pq.ParquetFile(arrow_mapped_file(self._directory_fd, name, self.manifest.sizes[name]))
            if meta.metadata.num_rows != segment["rows"]:
                raise IndexMismatchError(f"{segment['meta']} has {meta.metadata.num_rows} rows, expected {segment['rows']}",
                                         field="index", value=self.directory)
            self._meta[number] = meta
        return self._meta[number]

    @contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """Whatever a damaged file makes its parser raise (faiss, numpy, zipfile, pyarrow each have their
        own errors) becomes one error naming the file."""
        try:
            yield
        except XLSearchError:
            raise
        except FileNotFoundError:
            raise IndexMismatchError(f"{name} is missing", field="index", value=self.directory) from None
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200].replace(self._pinned, str(self.directory))
            raise IndexMismatchError(f"{name} is damaged ({reason}); `xlsearch verify` checks every file",
                                     field="index", value=self.directory) from None

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def __len__(self) -> int:
        return self.manifest.count

    def check_compatible(self, embedder: Embedder) -> None:
        """Vectors of another model or dimension would rank garbage: refuse, naming both."""
        built, asked = (self.manifest.model, self.manifest.dim), (embedder.model, embedder.dim)
        if built != asked:
            raise IndexMismatchError(
                f"was built with model {built[0]!r} at {built[1]} dims; the query embedder is {asked[0]!r} at {asked[1]} dims",
                field="index", value=self.directory)

    def column(self, name: str) -> np.ndarray:
        """A metadata column, by position."""
        if name not in self._columns:
            column = self.row_column(name)
            self._columns[name] = column if self._kept is None else column[self._kept]
        return self._columns[name]

    def row_column(self, name: str) -> np.ndarray:
        """A metadata column by row, the deleted rows included."""
        if name not in self._row_columns:
            parts = []
            for number, segment in enumerate(self.manifest.segments):
                with self._meta_lock, self._reading(segment["meta"]):
                    parts.append(as_numpy(self._parquet(number).read(columns=[name]).column(name)))
            self._row_columns[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._row_columns[name]

    @property
    def meta_schema(self) -> pa.Schema:
        """The metadata's columns and types, row ids left out: what rows added to the index must have."""
        with self._meta_lock:
            schema = self._parquet(0).schema_arrow
        return schema.remove(schema.get_field_index("row_id"))

    def table(self) -> pa.Table:
        """All metadata by position, without the row ids (they are row numbers, renumbered by a full write)."""
        parts = []
        for number, segment in enumerate(self.manifest.segments):
            with self._meta_lock, self._reading(segment["meta"]):
                parts.append(self._parquet(number).read().drop(["row_id"]))
        table = pa.concat_tables([part.cast(parts[0].schema) for part in parts])
        return table if self._kept is None else table.take(pa.array(self._kept))

    def segment_table(self, number: int) -> pa.Table:
        """Segment `number`'s metadata by row, deleted rows included, without the row ids."""
        with self._meta_lock, self._reading(self.manifest.segments[number]["meta"]):
            return self._parquet(number).read().drop(["row_id"])

    def rejects(self) -> list[dict]:
        """Inputs the embedding server refused when this index was built (rejects.jsonl)."""
        if self._rejects is None:
            return []
        with self._reading(REJECTS_FILE):
            self._rejects.seek(0)
            return [json.loads(line) for line in self._rejects.read().decode("utf-8").splitlines() if line.strip()]

    def raw_vectors(self) -> np.ndarray:
        """The raw vectors as stored, by position (this version's, whatever has been published since):
        memory-mapped where the version is one segment with no row deleted, else gathered into memory."""
        if len(self._raw) == 1 and self._kept is None:
            return self._vectors(0)
        return self.row_vectors(np.arange(len(self)) if self._kept is None else self._kept)

    def row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The raw vectors of `rows` (row numbers, as FAISS and the segments count them), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and len(self._raw) == 1:  # a run: a slice, not a gather
            return np.asarray(self._vectors(0)[rows[0]:rows[-1] + 1])
        if len(self._raw) == 1:
            return np.asarray(self._vectors(0)[rows])
        segment = np.searchsorted(self._starts, rows, side="right") - 1
        result = np.empty((len(rows), self.dim), dtype=np.float32)
        for number in sorted_unique(segment):
            at = np.flatnonzero(segment == number)
            result[at] = self._vectors(number)[rows[at] - self._starts[number]]
        return result

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Every position's vector (or those of positions `rows`) in the form searches compare
        (language-neutral where the index is), as float32 in memory; computed from the raw vectors, so it
        works whatever the FAISS index type."""
        raw = self.raw_vectors() if rows is None else self.row_vectors(self.row_of(np.asarray(rows, dtype=np.int64)))
        langs = None if self.language_stats is None else self.column("lang")
        return self._searchable(raw, None if langs is None else langs if rows is None else langs[rows])

    def searchable_rows(self, rows: np.ndarray) -> np.ndarray:
        """vectors() of row numbers (deleted rows too: an update compares them before it drops them)."""
        rows = np.asarray(rows, dtype=np.int64)
        langs = None if self.language_stats is None else self.row_column("lang")[rows]
        return self._searchable(self.row_vectors(rows), langs)

    def _searchable(self, raw: np.ndarray, langs: np.ndarray | None) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        return raw if self.language_stats is None else self.language_stats.neutralize(raw, langs)

    @property
    def rows_stored(self) -> int:
        """Rows in the segments and in FAISS, the deleted ones included."""
        return int(self._starts[-1])

    @property
    def deleted_rows(self) -> np.ndarray:
        """Row numbers removed since the last full build, sorted."""
        return self._deleted

    def row_of(self, positions: np.ndarray) -> np.ndarray:
        """The row numbers (FAISS's ids) of positions."""
        return positions if self._kept is None else self._kept[positions]

    def position_of(self, rows: np.ndarray) -> np.ndarray:
        """The positions of rows that were not deleted (-1 stays -1)."""
        if self._kept is None:
            return rows
        return np.where(rows >= 0, rows - np.searchsorted(self._deleted, rows), -1)

    def rows(self, row_ids: np.ndarray, columns: list[str]) -> list[dict]:
        """Metadata of the given positions, in the given order. Columns not already in memory are read
        from the row groups that hold them only."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        picked = {name: self.column(name)[row_ids] for name in columns if name in self._columns}
        missing = [name for name in columns if name not in picked]
        if missing and len(row_ids):
            rows = self.row_of(row_ids)
            segment = np.searchsorted(self._starts, rows, side="right") - 1
            if len(self._meta) == 1:
                picked.update(self._read_rows(0, rows, missing))
            else:
                picked.update({name: np.empty(len(rows), dtype=object) for name in missing})
                for number in sorted_unique(segment):
                    at = np.flatnonzero(segment == number)
                    found = self._read_rows(number, rows[at] - self._starts[number], missing)
                    for name in missing:
                        for i, value in zip(at, found[name]):
                            picked[name][i] = value
        return [{name: picked[name][i] for name in columns} for i in range(len(row_ids))]

    def _read_rows(self, segment: int, rows: np.ndarray, columns: list[str]) -> dict:
        """`columns` of one segment's `rows`, read from the row groups that hold them."""
        with self._meta_lock:
            meta = self._parquet(segment)
        sizes = [meta.metadata.row_group(g).num_rows for g in range(meta.metadata.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        groups = np.searchsorted(starts, rows, side="right") - 1
        needed = sorted_unique(groups)
        base = np.concatenate([[0], np.cumsum([sizes[g] for g in needed])])[np.searchsorted(needed, groups)]
        positions = base + rows - starts[groups]
        with self._meta_lock, self._reading(self.manifest.segments[segment]["meta"]):
            table = meta.read_row_groups(needed.tolist(), columns=columns)
            return {name: picked_values(table.column(name), positions) for name in columns}

    def search(self, queries: np.ndarray, k: int, row_filter: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions) per query; with `row_filter` (positions), only among those, and still
        k of them whenever that many exist (the filter runs inside FAISS, not after it)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        selector = self._skip_deleted
        if row_filter is not None:
            k = min(k, len(row_filter))
            if self.approximate and len(row_filter) <= EXACT_FILTER_ROWS:
                return self._exact_scan(queries, k, row_filter)
            selector = faiss.IDSelectorBatch(self.row_of(np.asarray(row_filter, dtype=np.int64)))
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = search(self.index, queries, k, self.search_params, selector, exact_vectors=self.searchable_rows)
        if row_filter is not None and self.approximate and (ids < 0).any():
            # the probed part of an approximate index held fewer than k allowed rows: k exist, so scan them
            return self._exact_scan(queries, k, row_filter)
        return scores, self.position_of(ids)

    def _exact_scan(self, queries: np.ndarray, k: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64)
        scores, found = faiss.knn(queries, self.vectors(positions), k, metric=faiss.METRIC_INNER_PRODUCT)
        return scores, np.where(found >= 0, positions[np.maximum(found, 0)], -1)


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
