"""The files of a version's rows. Segments: its rows as runs, each a metadata file and a raw vectors file (engine.store.files
names them). A full build writes segment 0; an update writes one segment of the rows it adds and takes
the others from the version before as hard links, so a version costs the files it changes, and the
files a version shares with the one before are never written again (nor re-hashed: the manifest's
checksums carry over, and `verify` checks every segment's). Beside them, each row's neighbours and the
inputs the embedding server refused, written whole by every version (a few bytes a row)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xlsearch.engine.ranking.neighbourhoods import NEIGHBOURHOOD_FILE, scoring_neighbourhoods
from xlsearch.engine.store.files import NEIGHBOUR_ROWS_FILE, NEIGHBOUR_SCORES_FILE, REJECTS_FILE, ROW_GROUP_ROWS, segment_files
from xlsearch.engine.store.publish import crash_point


def write_segment(staging: Path, number: int, meta: pa.Table, vectors: np.ndarray, first_row: int) -> tuple[dict, pa.Table]:
    """Segment `number`: `meta` numbered from `first_row` (row ids are row numbers: positions in FAISS)
    and the raw `vectors`. Returns its manifest entry and the metadata as written."""
    names = segment_files(number)
    if "row_id" in meta.column_names:
        meta = meta.drop(["row_id"])
    meta = meta.add_column(0, "row_id", pa.array(np.arange(first_row, first_row + len(meta), dtype=np.int64)))
    pq.write_table(meta, staging / names["meta"], row_group_size=ROW_GROUP_ROWS)
    crash_point("parquet")
    np.save(staging / names["vectors"], np.ascontiguousarray(vectors, dtype=np.float32))
    return {"number": number, **names, "rows": len(meta)}, meta


def link_files(source: Path, staging: Path, names: list[str]) -> None:
    """The files `names` of the version in `source`, in `staging` as hard links (copies where the file
    system has none). Published files are never written again, so a link is as good as a copy."""
    for name in names:
        try:
            os.link(source / name, staging / name)
        except OSError:
            shutil.copyfile(source / name, staging / name)


def write_neighbours(staging: Path, scores: np.ndarray, rows: np.ndarray, scoring: str, langs) -> None:
    """Each row's neighbourhood under `scoring` (what ranking reads; `langs`: each row's language), and
    the nearest rows behind it, which an update compares new rows against (engine.store.incremental)."""
    np.save(staging / NEIGHBOURHOOD_FILE, scoring_neighbourhoods(scoring, scores, rows, langs))
    np.save(staging / NEIGHBOUR_SCORES_FILE, scores.astype(np.float32))
    np.save(staging / NEIGHBOUR_ROWS_FILE, rows.astype(np.int64))


def write_rejects(staging: Path, rejects: list[dict]) -> None:
    if rejects:
        with open(staging / REJECTS_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
