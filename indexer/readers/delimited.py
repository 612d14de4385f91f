from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record
from xlsearch.indexer.readers.text import open_text

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are normal in a corpus


def read_delimited(path: Path, source: str) -> Iterator[Record]:
    """CSV, or TSV by extension; the first line names the fields."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open_text(path, source, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            for row, fields in enumerate(reader, start=2):
                if None in fields:
                    raise InputError(f"{source}:{row}: more values than the {len(reader.fieldnames)} header fields")
                yield Record(fields, source, row)
        except csv.Error as exc:
            raise InputError(f"{source}:{reader.line_num}: malformed {path.suffix[1:].upper()} ({exc})") from None
