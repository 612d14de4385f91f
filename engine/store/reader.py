"""A published index version, opened for search. Every file of the version is opened when the reader is
made (the FAISS index, the metadata and the raw vectors memory-mapped, the small files read) through its
directory as found then, pinned by a descriptor. A publish that renames directories meanwhile can neither
mix two versions in one reader nor take a file from under it: a reader answers from its version whole."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xlsearch.engine.ann.faiss_index import depth_parameter, read_faiss_index, search
from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import IndexMismatchError, InputError, XLSearchError
from xlsearch.engine.ranking.neighbourhoods import NEIGHBOURHOOD_FILE
from xlsearch.engine.ranking.neutral import STATS_FILE, LanguageStats
from xlsearch.engine.store.files import INDEX_FILE, META_FILE, REJECTS_FILE, VECTORS_FILE
from xlsearch.engine.store.manifest import MANIFEST_FILE, Manifest, file_sha256, parse_manifest
from xlsearch.engine.store.publish import IndexBusyError, published, real_path
from xlsearch.engine.vectors import sorted_unique

# A language filter over fewer rows than this is answered by an exact scan of just those rows, which is
# both exact and faster than asking an approximate index to skip everything else
EXACT_FILTER_ROWS = 50_000
# Files up to this size have their checksums checked at every open, so damage to them is named at once
# rather than parsed: sha256 reads about 1.5 GB/s here, 8 MiB costs ~5 ms, a tenth of a cold query's
# start-up. Larger files (the FAISS index, vectors, metadata of big indexes) are checked by `verify`.
CHECKED_AT_OPEN_BYTES = 8 << 20
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
    """Each file of the manifest that is missing, of another size, or (when at most `checked_bytes`
    long; None: all) of another checksum, named with what is wrong."""
    problems = []
    for name, size in manifest.sizes.items():
        try:
            actual = os.stat(version.files / name).st_size
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        if actual != size:
            problems.append(f"{name} has {actual} bytes, the manifest says {size}")
        elif name in manifest.checksums and (checked_bytes is None or size <= checked_bytes):
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
            self.index = read_faiss_index(str(files / INDEX_FILE))
        self.search_params = self.manifest.index.get("params", {})
        self.approximate = depth_parameter(self.index) is not None
        with self._reading(META_FILE):
            self._meta = pq.ParquetFile(pa.memory_map(str(files / META_FILE)))
        self._meta_lock = threading.Lock()  # one reader of the Parquet file at a time: pyarrow's is not shared-safe
        self._columns: dict[str, np.ndarray] = {}
        self.settings = self.manifest.settings
        with self._reading(STATS_FILE):
            self.language_stats = LanguageStats.load(files) if self.manifest.language_neutral else None
        with self._reading(VECTORS_FILE):
            self._raw = np.load(files / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        # each row's neighbourhood for margin ranking; None where the index ranks by plain cosine
        self.neighbourhoods = None
        if self.settings.uses_neighbourhoods:
            with self._reading(NEIGHBOURHOOD_FILE):
                self.neighbourhoods = np.load(files / NEIGHBOURHOOD_FILE, allow_pickle=False)
        with self._reading(REJECTS_FILE):
            self._rejects = open(files / REJECTS_FILE, "rb") if REJECTS_FILE in self.manifest.sizes else None
        self._check_shapes()

    def _check_shapes(self) -> None:
        counts = {"manifest": self.manifest.count, INDEX_FILE: self.index.ntotal, META_FILE: self._meta.metadata.num_rows}
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise IndexMismatchError(f"vector and metadata counts differ ({detail})", field="index", value=self.directory)
        if self.index.d != self.manifest.dim:
            raise IndexMismatchError(
                f"{INDEX_FILE} has dimension {self.index.d}, manifest says {self.manifest.dim}", field="index", value=self.directory
            )
        expected = {VECTORS_FILE: (self.manifest.count, self.manifest.dim), NEIGHBOURHOOD_FILE: (self.manifest.count,)}
        for name, array in ((VECTORS_FILE, self._raw), (NEIGHBOURHOOD_FILE, self.neighbourhoods)):
            if array is not None and array.shape != expected[name]:
                raise IndexMismatchError(f"{name} has shape {array.shape}, expected {expected[name]}", field="index",
                                         value=self.directory)

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
        if name not in self._columns:
            with self._meta_lock, self._reading(META_FILE):
                self._columns[name] = as_numpy(self._meta.read(columns=[name]).column(name))
        return self._columns[name]

    def table(self) -> pa.Table:
        """All metadata, without the row ids (they are positions, renumbered on every write)."""
        with self._meta_lock, self._reading(META_FILE):
            return self._meta.read().drop(["row_id"])

    def rejects(self) -> list[dict]:
        """Inputs the embedding server refused when this index was built (rejects.jsonl)."""
        if self._rejects is None:
            return []
        with self._reading(REJECTS_FILE):
            self._rejects.seek(0)
            return [json.loads(line) for line in self._rejects.read().decode("utf-8").splitlines() if line.strip()]

    def raw_vectors(self) -> np.ndarray:
        """The raw vectors as stored, memory-mapped (this version's, whatever has been published since)."""
        return self._raw

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
            base = np.concatenate([[0], np.cumsum([sizes[g] for g in needed])])[np.searchsorted(needed, groups)]
            positions = base + row_ids - starts[groups]
            with self._meta_lock, self._reading(META_FILE):
                table = self._meta.read_row_groups(needed.tolist(), columns=missing)
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
