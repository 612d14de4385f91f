from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from xlsearch.indexer.documents import Record

# LASER's Tatoeba layout: tatoeba.cmn-eng.cmn holds the cmn side of the cmn-eng pairs.
TATOEBA_NAME = re.compile(r"^tatoeba\.([a-z]{2,3})-([a-z]{2,3})\.([a-z]{2,3})$")


def open_text(path: Path, newline: str | None = None) -> IO[str]:
    # Invalid UTF-8 is replaced, not fatal: one bad byte must not lose a whole corpus.
    return open(path, encoding="utf-8-sig", errors="replace", newline=newline)


def read_lines(path: Path, source: str) -> Iterator[Record]:
    """One document per line; the language comes from a Tatoeba-style suffix when there is one."""
    match = TATOEBA_NAME.match(path.name)
    lang = match.group(3) if match else None
    with open_text(path) as handle:
        for row, line in enumerate(handle, start=1):
            yield Record({"text": line.rstrip("\r\n")}, source, row, lang=lang)
