from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record

# LASER's Tatoeba layout: tatoeba.cmn-eng.cmn holds the cmn side of the cmn-eng pairs.
TATOEBA_NAME = re.compile(r"^tatoeba\.([a-z]{2,3})-([a-z]{2,3})\.([a-z]{2,3})$")


# How much of a file is looked at to tell UTF-8 with a few bad bytes from a file in another encoding
ENCODING_SAMPLE_BYTES = 1 << 20
# Fewer undecodable bytes than this are taken for damage, however few characters are valid around them
LEGACY_MIN_INVALID = 3


def open_text(path: Path, source: str, newline: str | None = None) -> IO[str]:
    """A corpus file as UTF-8 text. A few invalid bytes are replaced, not fatal: one bad byte must not
    lose a whole corpus. A file in another encoding (Latin-1, Windows-1252, Shift-JIS...) is refused:
    read as UTF-8, every accented letter would be indexed as U+FFFD."""
    check_utf8(path, source)
    return open(path, encoding="utf-8-sig", errors="replace", newline=newline)


def check_utf8(path: Path, source: str) -> None:
    """InputError when the start of the file has more undecodable bytes than valid non-ASCII characters
    (at least LEGACY_MIN_INVALID): damaged UTF-8 keeps its valid characters around the bad bytes, while
    in a Latin-1 file nearly every accented letter is an invalid byte."""
    with open(path, "rb") as handle:
        sample = handle.read(ENCODING_SAMPLE_BYTES)
    if sample.isascii():
        return
    # not final when the sample stops inside the file: a character cut at its end is not an invalid one
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=len(sample) < ENCODING_SAMPLE_BYTES)
    replaced = text.count("\ufffd")
    invalid = replaced - sample.count("\ufffd".encode())  # U+FFFD written in the file is a valid character
    valid = len(text) - len(text.encode("ascii", errors="ignore")) - replaced
    if invalid >= LEGACY_MIN_INVALID and invalid > valid:
        raise InputError(f"{source}: not UTF-8 ({invalid} undecodable bytes, {valid} valid non-ASCII characters "
                         "at its start); it looks like Latin-1, Windows-1252 or another legacy encoding: convert it "
                         "to UTF-8 first, e.g. iconv -f latin1 -t utf-8")


def read_lines(path: Path, source: str) -> Iterator[Record]:
    """One document per line; the language comes from a Tatoeba-style suffix when there is one."""
    match = TATOEBA_NAME.match(path.name)
    lang = match.group(3) if match else None
    with open_text(path, source) as handle:
        for row, line in enumerate(handle, start=1):
            yield Record({"text": line.rstrip("\r\n")}, source, row, lang=lang)
