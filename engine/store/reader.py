"""A published index version, opened for search: its FAISS index memory-mapped, metadata read column by
column or row group by row group as asked, raw vectors memory-mapped."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xlsearch.engine.ann.faiss_index import depth_parameter, read_faiss_index, search
from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import IndexMismatchError
from xlsearch.engine.ranking.neighbourhoods import NEIGHBOURHOOD_FILE
from xlsearch.engine.ranking.neutral import LanguageStats
from xlsearch.engine.store.files import INDEX_FILE, META_FILE, REJECTS_FILE, VECTORS_FILE
from xlsearch.engine.store.manifest import read_manifest
from xlsearch.engine.store.publish import published
from xlsearch.engine.vectors import sorted_unique

# A language filter over fewer rows than this is answered by an exact scan of just those rows, which is
# both exact and faster than asking an approximate index to skip everything else
EXACT_FILTER_ROWS = 50_000


class IndexReader:
    """A published index, opened for search. Metadata columns are read only when first asked for."""

    def __init__(self, directory: Path) -> None:
        self.directory = published(Path(directory))
        self.manifest = read_manifest(self.directory)
        for name, size in self.manifest.sizes.items():
            path = self.directory / name
            if not path.is_file():
                raise IndexMismatchError(f"{name} is missing", field="index", value=directory)
            if path.stat().st_size != size:
                raise IndexMismatchError(f"{name} has {path.stat().st_size} bytes, the manifest says {size}", field="index", value=directory)
        self.index = read_faiss_index(str(self.directory / INDEX_FILE))
        self.search_params = self.manifest.index.get("params", {})
        self.approximate = depth_parameter(self.index) is not None
        self._meta = pq.ParquetFile(self.directory / META_FILE)
        self._columns: dict[str, np.ndarray] = {}
        self.language_stats = LanguageStats.load(self.directory) if self.manifest.language_neutral else None
        self.settings = self.manifest.settings
        # each row's neighbourhood for margin ranking; None where the index ranks by plain cosine
        self.neighbourhoods = np.load(self.directory / NEIGHBOURHOOD_FILE) if self.settings.scoring == "margin" else None
        counts = {"manifest": self.manifest.count, INDEX_FILE: self.index.ntotal, META_FILE: self._meta.metadata.num_rows}
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise IndexMismatchError(f"vector and metadata counts differ ({detail})", field="index", value=self.directory)
        if self.index.d != self.manifest.dim:
            raise IndexMismatchError(
                f"{INDEX_FILE} has dimension {self.index.d}, manifest says {self.manifest.dim}", field="index", value=self.directory
            )

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
