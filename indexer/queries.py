"""Query files for batch search: one query per line, or JSONL/CSV/Parquet with a `text` field."""

from __future__ import annotations

from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.indexer.readers import read_records, reader_for
from xlsearch.indexer.readers.text import read_lines


def read_queries(path: Path, text_field: str = "text") -> list[str]:
    if not path.is_file():
        raise InputError("no such file", field="queries", value=path)
    records = read_records(str(path)) if reader_for(path) else read_lines(path, str(path))
    queries = []
    for record in records:
        if text_field not in record.fields:
            raise InputError(f"{record.where}: no field {text_field!r} in this query record")
        text = str(record.fields[text_field] or "").strip()
        if text:
            queries.append(text)
    if not queries:
        raise InputError("no queries in this file", field="queries", value=path)
    return queries
