from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record
from xlsearch.indexer.readers.text import open_text


def read_jsonl(path: Path, source: str) -> Iterator[Record]:
    with open_text(path, source) as handle:
        for row, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{source}:{row}: invalid JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise InputError(f"{source}:{row}: expected a JSON object, got {type(value).__name__}")
            yield Record(value, source, row)
