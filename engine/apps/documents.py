"""Documents of an index as units: a document may be stored as several rows (its chunks)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from xlsearch.engine.errors import InputError
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.vectors import normalize_rows


@dataclass
class DocumentRows:
    ids: np.ndarray  # each document's id, in the order of its first row
    first_rows: np.ndarray  # each document's first row (its language and metadata are that row's)
    of_row: np.ndarray  # for each row, its document's position in `ids`

    @classmethod
    def of(cls, index: IndexReader) -> DocumentRows:
        row_ids = index.column("doc_id").astype(str)
        ids, first, of_row = np.unique(row_ids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        return cls(ids[order], first[order], position[of_row])

    def __len__(self) -> int:
        return len(self.ids)

    def mean_vectors(self, row_vectors: np.ndarray) -> np.ndarray:
        """One unit vector per document: the mean of its chunks' vectors (the vector itself when unchunked)."""
        sums = np.zeros((len(self.ids), row_vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, self.of_row, row_vectors)
        return normalize_rows(sums.astype(np.float32))


def document_row_ids(index: IndexReader, doc_id: str, field: str = "id") -> np.ndarray:
    """The rows of one document, in chunk order; an unknown id is the user's error, named by `field`."""
    rows = np.flatnonzero(index.column("doc_id").astype(str) == doc_id)
    if len(rows) == 0:
        raise InputError(f"no such document in {index.directory}", field=field, value=doc_id)
    return rows[np.argsort(index.column("chunk")[rows], kind="stable")]


def read_document(index: IndexReader, doc_id: str) -> dict:
    """One stored document whole: its chunks joined again at their recorded character offsets. Chunks
    may overlap (the overlap is kept once) or leave a gap, the whitespace the chunker trimmed from their
    ends; a gap comes back as that many spaces, so offsets still point at the same characters."""
    rows = document_row_ids(index, doc_id)
    chunks = index.rows(rows, ["lang", "text", "source", "start", "end", "extra"])
    text = ""
    for chunk in chunks:
        start = int(chunk["start"])
        text += " " * (start - len(text)) + str(chunk["text"])[max(0, len(text) - start):]
    first = chunks[0]
    extra = json.loads(first["extra"]) if first["extra"] else {}
    return {"id": doc_id, "lang": str(first["lang"]), "text": text, "source": str(first["source"]),
            "chunks": len(chunks), **extra}


def document_field(index: IndexReader, documents: DocumentRows, name: str) -> list[str | None]:
    """Each document's value of an extra corpus field (e.g. the demo's `group`); None where it is
    missing or empty. A field no document has is the user's error."""
    extras = index.column("extra")[documents.first_rows]
    values = [(json.loads(extra) if extra else {}).get(name) for extra in extras]
    values = [str(v) if v not in (None, "") else None for v in values]
    if not any(values):
        raise InputError(f"no document in {index.directory} has a {name!r} field")
    return values
