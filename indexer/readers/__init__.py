"""Corpus files to Records, by extension: JSONL, JSON, CSV/TSV, Parquet, plain text, Tatoeba-style
pairs, directories (recursively) and `hf:` datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record
from xlsearch.indexer.readers.delimited import read_delimited
from xlsearch.indexer.readers.hf import PREFIX as HF_PREFIX
from xlsearch.indexer.readers.hf import read_hf
from xlsearch.indexer.readers.json_array import read_json
from xlsearch.indexer.readers.jsonl import read_jsonl
from xlsearch.indexer.readers.parquet import read_parquet
from xlsearch.indexer.readers.text import TATOEBA_NAME, read_lines

READERS = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
    ".csv": read_delimited,
    ".tsv": read_delimited,
    ".parquet": read_parquet,
    ".txt": read_lines,
}


def reader_for(path: Path):
    if TATOEBA_NAME.match(path.name):
        return read_lines
    return READERS.get(path.suffix.lower())


def corpus_files(path: Path) -> list[Path]:
    """The readable files of a path: itself, or every known file under a directory, in a stable order."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and reader_for(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            known = ", ".join(sorted(READERS))
            raise InputError(f"{path}: no corpus files in this directory (known: {known}, tatoeba.xxx-eng.xxx)")
        return files
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if reader_for(path) is None:
        known = ", ".join(sorted(READERS))
        raise InputError(f"{path}: unknown corpus format {path.suffix or '(no extension)'!r} (known: {known}, tatoeba.xxx-eng.xxx, hf:NAME)")
    return [path]


def source_name(path: Path) -> str:
    """How a file is named in ids (`source:row`) and hits: its real path, relative to the working
    directory when inside it. The same file gets the same name however it was spelled (relative,
    absolute, through `..` or a symlink), so appending it again replaces its documents."""
    real = path.resolve()
    try:
        return str(real.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(real)


def read_records(corpus: str) -> Iterator[Record]:
    """Every record of one corpus argument: a file, a directory or `hf:NAME[:CONFIG][:SPLIT]`."""
    if corpus.startswith(HF_PREFIX):
        yield from read_hf(corpus)
        return
    root = Path(corpus)
    for path in corpus_files(root):
        source = source_name(path)
        if path.stat().st_size == 0:
            raise InputError(f"{source}: empty file")
        try:
            yield from reader_for(path)(path, source)
        except (IsADirectoryError, PermissionError) as exc:
            raise InputError(f"{source}: cannot read ({exc.strerror})") from None
