"""Updating an index by adding to what is there: the cost follows the change, not the index.

- New vectors are added to the trained FAISS index (IVF: to their lists; HNSW: into the graph; flat:
  appended), in the language-neutral form the last full build's statistics give. Nothing is retrained
  or tuned again, and the statistics are not fitted again.
- Deleted rows (a delete, or an appended id replacing its document) stay in FAISS and the segments,
  listed in deleted.npy; readers skip them (engine.store.reader).
- Neighbourhoods. A new row enters an old row's k nearest exactly when its cosine beats that row's
  k-th (stored in neighbour_scores.npy). Exactly, on an exact index (flat) and on a GPU, where builds
  find them exactly too: the new rows are searched against every row kept, a block at a time, which
  gives their k nearest, and each kept row against the new rows, whose best k are all that can enter
  its own (faiss's exact k-NN, on the GPU there). Otherwise, as a build on the CPU finds them, through
  the index at the depth tuned for neighbourhoods: each new row is searched REVERSE_DEPTH deep in the
  updated index, which gives its k nearest, and each old row found there takes it where it beats that
  row's k-th. The exact search grows as new rows x all rows (100,000 rows and 1% appended: an update
  took 5.2 s with it, 0.8 s searching instead; bench.append, on the CPU), so on the CPU only an exact
  index pays it. A row that had a deleted row among its k nearest is searched again, the same way.
- The version is the FAISS index written again (adding never rewrites the vectors' segments), a new
  segment of the added rows, the earlier segments hard-linked, and the small per-row files.

The statistics, lists and tuned depths stay those of the last full build: an update that would take the
rows changed since past REBUILD_SHARE of the rows that build saw, that adds a language the statistics
do not know, or that the index plan would now give another index type, writes the whole index again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from xlsearch.engine.ann.faiss_index import ADD_BATCH, search
from xlsearch.engine.ann.index_types import IndexPlan
from xlsearch.engine.ann.on_disk import lists_file_of, merged_on_disk, trained_of
from xlsearch.engine.ann.neighbours import exact_search, nearest_of_other_groups
from xlsearch.engine.ranking.neutral import STATS_FILE
from xlsearch.engine.store.files import DELETED_FILE, INDEX_FILE, NEIGHBOUR_ROWS_FILE, NEIGHBOUR_SCORES_FILE
from xlsearch.engine.store.manifest import Manifest, file_sha256, write_manifest
from xlsearch.engine.store.publish import crash_point, staged_version
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.segments import link_files, write_neighbours, write_rejects, write_segment

# Rows added or deleted since the last full build, as a share of the rows it wrote, beyond which an
# update writes the whole index again (statistics fitted, lists trained, depth tuned on what is there).
# The tolerances against a full build (bench.append) are measured at 1% appended.
REBUILD_SHARE = 0.25
# Rows read at a time by an exact update: 128 MB of float32 vectors (87,000 rows of 384)
BLOCK_BYTES = 1 << 27
# On an approximate index, how deep each new row is searched for the old rows it may enter: a new row can
# enter the k nearest of an old row that is not among its own nearest (the old row's k-th is lower than
# the new row's). 200,000 rows (IVF711,SQ8, parallel-margin) and 1% appended, the appended index's
# neighbourhoods against the same index's computed from scratch: within 0.002 for 0.9921 of rows at 32,
# 0.9973 at 128, 0.9993 at 512; the append took 4.9, 4.7 and 5.4 s (bench.out_of_core's, this stop).
# At 32 on HNSW32 (100,000 rows; bench.append) 0.9485 were within 0.002 of exact, a rebuild's 0.9505.
REVERSE_DEPTH = 256
# New rows searched at a time on an approximate index: a row holds REVERSE_DEPTH candidates in each scan
# thread and in the answer (12 bytes each), and its probed lists (24 bytes each): 4,096 rows at 256 deep,
# 2 threads and nprobe 288 are about 65 MB.
REVERSE_BATCH = 4096


def update_in_place(index: IndexReader, keep: np.ndarray, vectors: np.ndarray | None, meta: pa.Table | None,
                    rejects: list[dict], plan: IndexPlan, provenance, device: str = "cpu") -> Manifest | None:
    """The new version of `index` (opened under the writer lock) with the positions where `keep` is
    false deleted and `vectors`/`meta` added, published; None when it cannot be updated in place
    (module docstring) and must be written whole. On `device` "gpu" (resolve_device's) neighbourhoods
    are updated exactly there."""
    vectors = np.zeros((0, index.dim), np.float32) if vectors is None else np.asarray(vectors, dtype=np.float32)
    new_langs = np.asarray([] if meta is None else meta.column("lang").to_pylist(), dtype=object)
    deleted = np.union1d(index.deleted_rows, index.row_of(np.flatnonzero(~keep))).astype(np.int64)
    if not _can_update(index, plan, new_langs, len(vectors), len(deleted)):
        return None
    stats = index.language_stats
    searchable = vectors if stats is None else stats.neutralize(vectors, new_langs)
    first_new = index.rows_stored
    with staged_version(index.target) as staging:
        ann = _with_rows_added(index, searchable, staging)
        manifest = _write_version(staging, index, ann, keep, deleted, vectors, searchable, meta, rejects,
                                  provenance, first_new, device)
    return manifest


def _with_rows_added(index: IndexReader, searchable: np.ndarray, staging: Path) -> faiss.Index:
    """The index's FAISS index with `searchable` added as the next rows. In memory, read again (the
    reader's lists are mapped read-only); on disk, the published lists and a partial index of the new
    rows merged into a new lists file in staging (published files are never written), or, with no new
    rows, the published lists linked."""
    published = index.directory / INDEX_FILE
    if not index.manifest.index.get("on_disk"):
        ann = faiss.read_index(str(published))
        for start in range(0, len(searchable), ADD_BATCH):
            ann.add(np.ascontiguousarray(searchable[start:start + ADD_BATCH]))
        return ann
    if not len(searchable):
        link_files(index.directory, staging, [lists_file_of(published).name])
        return index.index
    part = trained_of(published)
    part.add_with_ids(np.ascontiguousarray(searchable), np.arange(index.rows_stored, index.rows_stored + len(searchable)))
    merged = merged_on_disk(trained_of(published), [index.index, part], lists_file_of(staging / INDEX_FILE))
    crash_point("merge")
    return merged


def _can_update(index: IndexReader, plan: IndexPlan, new_langs: np.ndarray, added: int, deleted: int) -> bool:
    m = index.manifest
    if m.settings.uses_neighbourhoods and NEIGHBOUR_SCORES_FILE not in m.sizes:
        return False  # written before neighbours were kept
    if m.settings.language_neutral and index.language_stats is None:
        return False  # too few of each language to fit statistics so far: the new rows may change that
    if index.language_stats is not None and not set(new_langs.tolist()) <= set(index.language_stats.languages):
        return False
    if (plan.kind, plan.storage, plan.on_disk) != (m.index["kind"], m.index["storage"], bool(m.index.get("on_disk"))):
        return False
    if plan.kind == "factory" and plan.key != m.index["key"]:
        return False
    changed = index.rows_stored + added - m.built_rows + deleted
    return changed <= REBUILD_SHARE * m.built_rows


def _write_version(staging, index: IndexReader, ann: faiss.Index, keep: np.ndarray, deleted: np.ndarray,
                   vectors: np.ndarray, searchable: np.ndarray, meta: pa.Table | None, rejects: list[dict],
                   provenance, first_new: int, device: str) -> Manifest:
    m = index.manifest
    try:
        faiss.write_index(ann, str(staging / INDEX_FILE))
    except RuntimeError as exc:  # faiss reports a failed write (disk full) this way
        raise OSError(str(exc).strip().splitlines()[-1]) from None
    crash_point("faiss")
    linked = [name for segment in m.segments for name in (segment["meta"], segment["vectors"])]
    linked += [STATS_FILE] if STATS_FILE in m.sizes else []
    link_files(index.directory, staging, linked)
    lists = lists_file_of(staging / INDEX_FILE)
    if lists.exists() and os.path.samefile(lists, index.directory / lists.name):  # _with_rows_added linked it
        linked.append(lists.name)
    segments = list(m.segments)
    if len(vectors):
        number = max(s["number"] for s in m.segments) + 1
        segment, _ = write_segment(staging, number, meta.cast(index.meta_schema), vectors, first_new)
        segments.append(segment)
    if len(deleted):
        np.save(staging / DELETED_FILE, deleted)
    if m.settings.uses_neighbourhoods:
        scores, rows = updated_neighbours(index, ann, keep, deleted, searchable, meta, device)
        langs = index.row_column("lang").tolist() + ([] if meta is None else meta.column("lang").to_pylist())
        write_neighbours(staging, scores, rows, m.settings.scoring, langs)
    all_rejects = index.rejects() + rejects
    write_rejects(staging, all_rejects)
    manifest = _manifest(staging, index, keep, meta, provenance, segments, len(deleted), len(all_rejects), linked)
    write_manifest(staging, manifest)
    return manifest


def updated_neighbours(index: IndexReader, ann: faiss.Index, keep: np.ndarray, deleted: np.ndarray,
                       searchable: np.ndarray, meta: pa.Table | None, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Every row's k nearest rows of other documents (scores, rows) after the update, k as deep as the
    stored ones: those, changed where the new rows enter them or where a deleted row was among them, and
    the new rows' own; exactly on an exact index or on `device` "gpu", else through `ann`, the updated
    index (module docstring)."""
    scores = np.array(np.load(index.directory / NEIGHBOUR_SCORES_FILE, allow_pickle=False))
    rows = np.array(np.load(index.directory / NEIGHBOUR_ROWS_FILE, allow_pickle=False))
    k = scores.shape[1]
    kept_rows = index.row_of(np.flatnonzero(keep))
    exact = device == "gpu" or not index.approximate
    new_scores = np.full((len(searchable), k), -np.inf, np.float32)
    new_rows = np.full((len(searchable), k), -1, np.int64)
    if len(searchable):
        # an appended document's chunks are all new rows: each old row can be its own document here, which
        # spares reading every row's document
        new_documents = np.unique(np.asarray(meta.column("doc_id").to_pylist(), dtype=object), return_inverse=True)[1].ravel()
        documents = _Documents(np.concatenate([np.arange(index.rows_stored), index.rows_stored + new_documents]))
        if exact:
            new_scores, new_rows = _offered_exactly(index, scores, rows, kept_rows, searchable, documents, device)
        else:
            new_scores, new_rows = _offered_through_index(index, ann, scores, rows, deleted, searchable, documents)
    lost = kept_rows[np.isin(rows[kept_rows], deleted).any(axis=1)]
    if len(lost):
        new_ids = [] if meta is None else meta.column("doc_id").to_pylist()
        documents = _Documents(np.unique(np.concatenate([index.row_column("doc_id"), np.asarray(new_ids, dtype=object)]),
                                         return_inverse=True)[1].ravel(), np.setdiff1d(np.arange(index.rows_stored), kept_rows))
        if exact:
            again = _Nearest(index.searchable_rows(lost), lost, documents, k, device)
            if len(searchable):
                again.searched(index.rows_stored + np.arange(len(searchable)), searchable)
            for block, vectors in _blocks(index, kept_rows):
                again.searched(block, vectors)
            scores[lost], rows[lost] = again.scores, again.rows
        else:
            depth = min(documents.depth(lost, k), ann.ntotal - len(deleted))
            skipped = faiss.IDSelectorBatch(deleted)  # held while the selector, which points to it, is used
            found = search(ann, index.searchable_rows(lost), depth, index.neighbourhood_params, faiss.IDSelectorNot(skipped),
                           exact_vectors=_exact_vectors(index, searchable))
            scores[lost], rows[lost] = nearest_of_other_groups(*found, documents.codes[lost], documents.codes, k)
    return np.vstack([scores, new_scores]), np.vstack([rows, new_rows])


class _Documents:
    """Each row's document as a number (`codes`, stored rows then new ones), and how many rows each has
    that are not `dropped` (deleted): a row's search goes that much deeper, to look past its own."""

    def __init__(self, codes: np.ndarray, dropped: np.ndarray = np.zeros(0, np.int64)) -> None:
        self.codes = codes
        alive = np.ones(len(codes), bool)
        alive[dropped] = False
        self.rows_of = np.bincount(codes[alive], minlength=int(codes.max(initial=-1)) + 1)

    def depth(self, queries: np.ndarray, k: int) -> int:
        """How deep rows `queries` are searched for k nearest of other documents."""
        return k + int(self.rows_of[self.codes[queries]].max(initial=0))


def _offered_exactly(index: IndexReader, scores: np.ndarray, rows: np.ndarray, kept_rows: np.ndarray,
                     searchable: np.ndarray, documents: _Documents, device: str) -> tuple[np.ndarray, np.ndarray]:
    """By exact search on `device`, the kept rows read a block at a time: the new rows against every row,
    and each kept row against the new rows, taking those that beat its k-th (scores and rows changed in
    place). Returns the new rows' own k nearest of other documents."""
    k = scores.shape[1]
    added = index.rows_stored + np.arange(len(searchable))
    new = _Nearest(searchable, added, documents, k, device)
    new.searched(added, searchable)
    for block, vectors in _blocks(index, kept_rows):
        new.searched(block, vectors)
        # each row's k best of the new rows: only those can enter its k nearest
        offered, among = exact_search(vectors, searchable, min(k, len(searchable)), device)
        entering = offered > scores[block, k - 1][:, None]
        changed = np.flatnonzero(entering.any(axis=1))
        if len(changed):
            scores[block[changed]], rows[block[changed]] = _merged(
                scores[block[changed]], rows[block[changed]], np.where(entering, offered, -np.inf)[changed],
                np.where(entering, added[np.maximum(among, 0)], -1)[changed], k)
    return new.scores, new.rows


def _blocks(index: IndexReader, kept_rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, their searchable vectors) of the kept rows, BLOCK_BYTES of vectors at a time."""
    step = max(1, BLOCK_BYTES // (4 * index.dim))
    for start in range(0, len(kept_rows), step):
        block = kept_rows[start:start + step]
        yield block, index.searchable_rows(block)


class _Nearest:
    """The k nearest rows of other documents of rows `queried` (their vectors: `vectors`), exact, merged
    from the candidate rows searched so far."""

    def __init__(self, vectors: np.ndarray, queried: np.ndarray, documents: _Documents, k: int, device: str) -> None:
        self.vectors, self.k, self.device = vectors, k, device
        self.groups, self.codes, self.depth = documents.codes[queried], documents.codes, documents.depth(queried, k)
        self.scores = np.full((len(vectors), k), -np.inf, np.float32)
        self.rows = np.full((len(vectors), k), -1, np.int64)

    def searched(self, candidates: np.ndarray, vectors: np.ndarray) -> None:
        """Merged with the nearest of the rows `candidates` (their vectors: `vectors`)."""
        found, among = exact_search(self.vectors, vectors, min(self.depth, len(candidates)), self.device)
        found_rows = np.where(among >= 0, candidates[np.maximum(among, 0)], -1)
        self.scores, self.rows = _merged(self.scores, self.rows,
                                         *nearest_of_other_groups(found, found_rows, self.groups, self.codes, self.k), self.k)


def _offered_through_index(index: IndexReader, ann: faiss.Index, scores: np.ndarray, rows: np.ndarray,
                           deleted: np.ndarray, searchable: np.ndarray, documents: _Documents) -> tuple[np.ndarray, np.ndarray]:
    """On an approximate index, as its build does: the new rows' nearest through `ann` (REVERSE_DEPTH
    deep, REVERSE_BATCH rows a search), and each old row found there takes the new row where it beats the
    row's stored k-th (scores and rows changed in place). Returns the new rows' own k nearest of other
    documents."""
    k = scores.shape[1]
    first_new = index.rows_stored
    depth = min(max(REVERSE_DEPTH, documents.depth(first_new + np.arange(len(searchable)), k)), ann.ntotal - len(deleted))
    skipped = faiss.IDSelectorBatch(deleted)  # held while the selector, which points to it, is used
    # where the build re-scored its neighbours exactly, the candidates found here are re-scored too (rerank
    # 1): offered to old rows, they meet stored exact cosines, and REVERSE_DEPTH of them already hold more
    # than the twice-k the build re-scored
    params = index.neighbourhood_params | ({"rerank": 1} if "rerank" in index.neighbourhood_params else {})
    exact_vectors = _exact_vectors(index, searchable)
    parts = []
    for start in range(0, len(searchable), REVERSE_BATCH):
        block = searchable[start:start + REVERSE_BATCH]
        found, among = search(ann, block, depth, params, faiss.IDSelectorNot(skipped) if len(deleted) else None,
                              exact_vectors=exact_vectors)
        parts.append(nearest_of_other_groups(found, among, documents.codes[first_new + start + np.arange(len(block))],
                                             documents.codes, k))
        _offer(scores, rows, found, among, first_new, first_new + start)
    return np.vstack([part[0] for part in parts]), np.vstack([part[1] for part in parts])


def _exact_vectors(index: IndexReader, searchable: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Rows -> their searchable vectors, for re-scoring candidates: stored rows read from the index, the
    new ones (numbered from index.rows_stored) from `searchable`."""
    def vectors(rows: np.ndarray) -> np.ndarray:
        stored = rows < index.rows_stored
        result = np.empty((len(rows), index.dim), np.float32)
        result[stored] = index.searchable_rows(rows[stored])
        result[~stored] = searchable[rows[~stored] - index.rows_stored]
        return result

    return vectors


def _offer(scores: np.ndarray, rows: np.ndarray, found: np.ndarray, among: np.ndarray, first_new: int, first: int) -> None:
    """Each old row (below `first_new`) that new rows `first`... found (their cosines `found` to rows
    `among`) takes them where they beat its stored k-th: scores and rows changed in place."""
    k = scores.shape[1]
    new, column = np.nonzero((among >= 0) & (among < first_new))
    old = among[new, column]
    entering = found[new, column] > scores[old, k - 1]
    old, new, cosine = old[entering], new[entering] + first, found[new, column][entering]
    if not len(old):
        return
    order = np.lexsort((-cosine, old))
    old, new, cosine = old[order], new[order], cosine[order]
    changed, first_of = np.unique(old, return_index=True)
    rank = np.arange(len(old)) - np.repeat(first_of, np.diff(np.append(first_of, len(old))))
    kept = rank < k
    offered = np.full((len(changed), k), -np.inf, np.float32)
    offered_rows = np.full((len(changed), k), -1, np.int64)
    line = np.searchsorted(changed, old[kept])
    offered[line, rank[kept]], offered_rows[line, rank[kept]] = cosine[kept], new[kept]
    scores[changed], rows[changed] = _merged(scores[changed], rows[changed], offered, offered_rows, k)


def _merged(scores: np.ndarray, rows: np.ndarray, offered: np.ndarray, offered_rows: np.ndarray,
            k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each line's k best of its current (scores, rows) and the `offered` cosines, best first. `offered_rows`
    names the rows offered: one per column (1-d), or per line and column (2-d); -inf where not offered."""
    offered_ids = np.broadcast_to(offered_rows, offered.shape)
    if offered.shape[1] > k:
        top = np.argpartition(-offered, k - 1, axis=1)[:, :k]
        offered, offered_ids = np.take_along_axis(offered, top, axis=1), np.take_along_axis(offered_ids, top, axis=1)
    both_scores = np.hstack([scores, offered.astype(np.float32)])
    both_rows = np.hstack([rows, np.where(np.isfinite(offered), offered_ids, -1)])
    order = np.argsort(-both_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(both_scores, order, axis=1), np.take_along_axis(both_rows, order, axis=1)


def _manifest(staging, index: IndexReader, keep: np.ndarray, meta: pa.Table | None, provenance, segments: list[dict],
              deleted: int, rejected: int, linked: list[str]) -> Manifest:
    """The version's manifest: the files linked keep their checksums, the others are hashed."""
    m = index.manifest
    new_docs = [] if meta is None else meta.column("doc_id").to_pylist()
    new_langs = [] if meta is None else meta.column("lang").to_pylist()
    languages = Counter(m.languages)
    languages.subtract(Counter(index.column("lang")[~keep].tolist()))
    languages.update(new_langs)
    languages = {lang: count for lang, count in languages.items() if count > 0}
    documents = len(set(index.column("doc_id")[keep].tolist()) | set(new_docs))
    files = sorted(p.name for p in staging.iterdir())
    return dataclasses.replace(
        m, corpora=provenance.corpora, skipped=provenance.skipped, documents=documents,
        count=int(keep.sum()) + len(new_docs), rejected=rejected,
        languages=dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        index={**m.index, "bytes": (staging / INDEX_FILE).stat().st_size},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        checksums={name: m.checksums[name] if name in linked else file_sha256(staging / name) for name in files},
        sizes={name: (staging / name).stat().st_size for name in files},
        segments=segments, deleted=deleted,
    )
