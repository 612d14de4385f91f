"""Index versions for tests and benchmarks: a corpus written as JSONL, and a version published over an
index as a writer publishes one (the real lock, staging directory and renames)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from xlsearch.engine.store.publish import new_staging, publish, writer_lock


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def publish_copy(source: Path, target: Path) -> None:
    """Publish a copy of the version at `source` as the new version of the index at `target`."""
    with writer_lock(target):
        staging = new_staging(target)
        shutil.copytree(source, staging, dirs_exist_ok=True)
        publish(staging, target)
