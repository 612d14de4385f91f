"""manifest.json: what an index holds and how it was made, plus checksums of its other files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from xlsearch.engine.errors import IndexMismatchError, InputError

FORMAT_VERSION = 2  # 2: chunk columns in meta.parquet, documents and chunking in the manifest
MANIFEST_FILE = "manifest.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise InputError(f"--index {directory}: no such index directory")
    if not path.is_file():
        raise InputError(f"--index {directory}: not an xlsearch index (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable manifest: {exc}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{path}: index format version {version!r}; this xlsearch reads {FORMAT_VERSION}: rebuild it with `xlsearch index`"
        )
    return manifest


def write_manifest(directory: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False)
    (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
