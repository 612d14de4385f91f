"""`xlsearch verify`: every check an index can have, checksums included (loading checks only sizes)."""

from __future__ import annotations

from pathlib import Path

from xlsearch.engine.store.manifest import file_sha256
from xlsearch.engine.store.reader import IndexReader


def verify_index(directory: Path) -> list[str]:
    """The problems found; an empty list means the index is whole. Raises only if it cannot be opened."""
    index = IndexReader(directory)  # manifest, files present, sizes, counts, dimension
    problems = []
    for name, expected in index.manifest.checksums.items():
        actual = file_sha256(index.directory / name)
        if actual != expected:
            problems.append(f"{name}: sha256 {actual[:12]}… differs from the manifest's {expected[:12]}…")
    raw = index.raw_vectors()
    if raw.shape != (len(index), index.dim):
        problems.append(f"vectors.npy has shape {raw.shape}, expected ({len(index)}, {index.dim})")
    langs = index.column("lang")
    counted = {lang: int((langs == lang).sum()) for lang in set(langs.tolist())}
    if counted != index.manifest.languages:
        problems.append(f"languages in meta.parquet {counted} differ from the manifest's {index.manifest.languages}")
    return problems
