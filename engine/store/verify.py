"""`xlsearch verify`: every check an index can have. Files are checked (present, sizes, checksums) before
anything is parsed, so that damage is named by file rather than by whatever a parser makes of it."""

from __future__ import annotations

from pathlib import Path

from xlsearch.engine.errors import IndexMismatchError
from xlsearch.engine.store.reader import IndexReader, PinnedVersion, file_problems, open_version, read_pinned_manifest


def verify_index(directory: Path) -> list[str]:
    """The problems found, each naming its file; an empty list means the index is whole. Raises only if
    it is not an index (no directory, no readable manifest)."""
    return open_version(Path(directory), _verify)


class _Replaced(Exception):
    """A publish replaced the version being verified (and removed its files): verify the new one."""


def _verify(version: PinnedVersion) -> list[str]:
    manifest, _ = read_pinned_manifest(version)
    problems = file_problems(version, manifest, checked_bytes=None)
    if not problems:
        try:
            langs = IndexReader.from_version(version, checked_bytes=0).column("lang")  # counts, dimension, shapes
        except IndexMismatchError as exc:
            problems.append(exc.message)
        else:
            counted = {lang: int((langs == lang).sum()) for lang in set(langs.tolist())}
            if counted != manifest.languages:
                problems.append(f"languages in meta.parquet {counted} differ from the manifest's {manifest.languages}")
    if problems and not version.is_current():
        raise _Replaced  # open_version tries again
    return problems
