from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record


def read_parquet(path: Path, source: str) -> Iterator[Record]:
    try:
        parquet = pq.ParquetFile(path)
        row = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for fields in batch.to_pylist():
                row += 1
                yield Record(fields, source, row)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{source}: unreadable Parquet ({exc})") from None
