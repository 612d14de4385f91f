from __future__ import annotations

from collections.abc import Iterator

from xlsearch.engine.errors import InputError
from xlsearch.indexer.documents import Record

PREFIX = "hf:"


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (name, config, split)."""
    parts = spec[len(PREFIX) :].split(":")
    if not parts[0] or len(parts) > 3:
        raise InputError(f"{spec!r}: expected hf:NAME[:CONFIG][:SPLIT]")
    name, config, split = (parts + [None, None])[:3]
    return name, config or None, split or None


def read_hf(spec: str) -> Iterator[Record]:
    """Rows of a Hugging Face dataset (from the local cache or the hub, as `datasets` allows)."""
    name, config, split = parse_spec(spec)
    import datasets  # ~2 s to import: only when an hf: corpus is asked for

    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many unrelated types for "cannot load"
        raise InputError(f"{spec}: cannot load dataset ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    source = f"{PREFIX}{name}" + (f":{config}" if config else "") + f":{split or loaded.split}"
    for row, fields in enumerate(loaded, start=1):
        yield Record(dict(fields), source, row)
