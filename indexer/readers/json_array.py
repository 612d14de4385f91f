from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record
from xlsearch.indexer.readers.text import open_text


def read_json(path: Path, source: str) -> Iterator[Record]:
    """A JSON array of objects, or an object holding one under `data`/`documents`/`rows`."""
    with open_text(path, source) as handle:
        try:
            value = json.load(handle)
        except ValueError as exc:
            raise InputError(f"{source}: invalid JSON ({exc})") from None
    if isinstance(value, dict):
        value = next((value[k] for k in ("data", "documents", "rows") if isinstance(value.get(k), list)), value)
    if not isinstance(value, list):
        raise InputError(f"{source}: expected a JSON array of objects")
    for row, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise InputError(f"{source}:{row}: expected a JSON object, got {type(item).__name__}")
        yield Record(item, source, row)
