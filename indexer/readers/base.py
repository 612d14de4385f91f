"""A reader turns one corpus file (or dataset) into Records; it knows nothing of field names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from xlsearch.indexer.documents import Record


class Reader(Protocol):
    def __call__(self, path: Path, source: str) -> Iterator[Record]: ...
