"""Incremental updates (issue 16, part 3): an append or a delete adds to the index instead of writing it
again, and ends where a full rebuild of the same rows ends: the same exact top-10, neighbourhoods within
0.002. A killed update leaves the previous version serving; verify checks the new segments. Synthetic
multilingual vectors from the shipped mixture (bench.append), real FAISS, real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench.append import LANGUAGES, PROVENANCE, metadata, multilingual_vectors
from tests.conftest import ROOT
from xlsearch.engine.ann.faiss_index import NEIGHBOURHOOD_SHARE, resolve_device
from xlsearch.engine.ann.gpu import probe_gpu
from xlsearch.engine.ann.neighbours import exact_neighbours
from xlsearch.engine.ranking.neighbourhoods import neighbour_depth, scoring_neighbourhoods
from xlsearch.engine.store.publish import CRASH_ENV, writer_lock
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.updates import delete_documents
from xlsearch.engine.store.verify import verify_index
from xlsearch.engine.store.writer import plan_index, rewrite_index, write_index

COUNT, ADDED = 6_000, 60  # 1% appended, as the issue measures: the statistics are not fitted again
# Under 20,000 vectors auto is an exact scan, and neighbourhoods are exact too. The tolerances against a
# rebuild are the issue's, for margin; parallel-margin's are checked against an exact recomputation.
FLAT = IndexSettings(device="cpu", scoring="margin")
TOLERANCE = 0.002


@pytest.fixture(scope="module")
def data():
    return multilingual_vectors(COUNT + ADDED + 200, seed=3)


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    """An exact index of the first COUNT vectors, built once: each test updates a copy."""
    vectors, langs = data
    path = tmp_path_factory.mktemp("incremental") / "base"
    build(path, vectors[:COUNT], langs[:COUNT])
    return path


def copy_of(built, tmp_path):
    return shutil.copytree(built, tmp_path / "ix")


def build(directory, vectors, langs, settings=FLAT, first=0):
    meta = metadata(langs, first)
    write_index(directory, vectors, meta, PROVENANCE, plan_index(settings, len(vectors), vectors.shape[1],
                                                                 resolve_device(settings.device)),
                settings=settings, device=settings.device)


def append(directory, vectors, langs, first):
    with writer_lock(directory):
        index = IndexReader(directory)
        plans = plan_index(index.settings, len(index) + len(vectors), index.dim, resolve_device("cpu"))
        return rewrite_index(index, np.ones(len(index), bool), vectors, metadata(langs, first), plans=plans)


def assert_exact_neighbourhoods(index: IndexReader):
    """An exact index's neighbourhoods are those an exact search of its rows gives, whatever updates made it."""
    scoring = index.settings.scoring
    scores, rows = exact_neighbours(index.vectors(), neighbour_depth(scoring), groups=index.column("doc_id"))
    exact = scoring_neighbourhoods(scoring, scores, rows, index.column("lang"))
    assert np.allclose(index.neighbourhoods, exact, atol=1e-5)


def assert_like_a_rebuild(updated: IndexReader, rebuilt: IndexReader, queries: np.ndarray, langs: np.ndarray):
    """Same documents in the same order, neighbourhoods within the tolerance for 99%; the updated index's
    top-10 that of an exact search of its own rows, and the rebuilt one's but for near ties (a rebuild
    fits the language statistics again, which moves every cosine a little, queries' included)."""
    assert updated.column("doc_id").tolist() == rebuilt.column("doc_id").tolist()
    assert_exact_neighbourhoods(updated)
    gap = np.abs(updated.neighbourhoods - rebuilt.neighbourhoods)
    assert (gap <= TOLERANCE).mean() >= 0.99, f"neighbourhoods within {TOLERANCE}: {(gap <= TOLERANCE).mean():.4f}"
    neutral = updated.language_stats.neutralize(queries, langs)
    found = updated.search(neutral, 10)[1]
    assert (found == np.argsort(-(neutral @ updated.vectors().T), axis=1, kind="stable")[:, :10]).all()
    ids = [updated.column("doc_id")[found],
           rebuilt.column("doc_id")[rebuilt.search(rebuilt.language_stats.neutralize(queries, langs), 10)[1]]]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*ids)]) >= 0.98


def test_an_append_adds_a_segment_and_ends_where_a_rebuild_ends(data, built, tmp_path):
    vectors, langs = data
    queries, query_langs = vectors[-200:], langs[-200:]
    copy_of(built, tmp_path)
    first_segment = os.stat(tmp_path / "ix" / "vectors.npy").st_ino
    manifest = append(tmp_path / "ix", vectors[COUNT:COUNT + ADDED], langs[COUNT:COUNT + ADDED], COUNT)
    assert [s["rows"] for s in manifest.segments] == [COUNT, ADDED] and manifest.count == COUNT + ADDED
    assert os.stat(tmp_path / "ix" / "vectors.npy").st_ino == first_segment  # linked, never written again
    build(tmp_path / "rebuilt", vectors[:COUNT + ADDED], langs[:COUNT + ADDED])
    updated, rebuilt = IndexReader(tmp_path / "ix"), IndexReader(tmp_path / "rebuilt")
    assert_like_a_rebuild(updated, rebuilt, queries, query_langs)
    assert updated.rows(np.array([COUNT + 5, 3]), ["doc_id"]) == [{"doc_id": f"d{COUNT + 5}"}, {"doc_id": "d3"}]
    assert verify_index(tmp_path / "ix") == []


def test_a_delete_ends_where_a_rebuild_ends_and_its_rows_are_never_found(data, built, tmp_path):
    vectors, langs = data
    queries, query_langs = vectors[-200:], langs[-200:]
    copy_of(built, tmp_path)
    gone = np.random.default_rng(0).choice(COUNT, ADDED, replace=False)
    manifest, removed, missing = delete_documents(tmp_path / "ix", [f"d{i}" for i in gone] + ["no-such-id"])
    assert len(removed) == ADDED and missing == ["no-such-id"] and manifest.deleted == ADDED
    kept = np.setdiff1d(np.arange(COUNT), gone)
    rebuilt_meta = metadata(langs[kept], 0)
    ids = [f"d{i}" for i in kept]
    write_index(tmp_path / "rebuilt", vectors[kept], rebuilt_meta.set_column(0, "doc_id", [ids]), PROVENANCE,
                plan_index(FLAT, len(kept), vectors.shape[1], resolve_device("cpu")), settings=FLAT)
    updated, rebuilt = IndexReader(tmp_path / "ix"), IndexReader(tmp_path / "rebuilt")
    assert len(updated) == len(kept) and not np.isin(updated.column("doc_id"), removed).any()
    assert_like_a_rebuild(updated, rebuilt, queries, query_langs)
    # the deleted documents themselves, as queries, find everything but themselves
    found = updated.search(updated.language_stats.neutralize(vectors[gone[:20]], langs[gone[:20]]), 10)[1]
    assert not np.isin(updated.column("doc_id")[found], removed).any()
    again, removed_again, missing_again = delete_documents(tmp_path / "ix", removed[:3])
    assert removed_again == [] and missing_again == removed[:3]
    assert verify_index(tmp_path / "ix") == []


def test_parallel_margin_neighbourhoods_stay_exact_through_appends_and_deletes(data, tmp_path):
    vectors, langs = data
    build(tmp_path / "ix", vectors[:3_000], langs[:3_000], IndexSettings(device="cpu", scoring="parallel-margin"))
    append(tmp_path / "ix", vectors[3_000:3_030], langs[3_000:3_030], 3_000)
    delete_documents(tmp_path / "ix", [f"d{i}" for i in range(0, 3_030, 101)])
    index = IndexReader(tmp_path / "ix")
    assert len(index.manifest.segments) == 2 and index.manifest.deleted == 30
    assert_exact_neighbourhoods(index)


def test_deletes_on_an_approximate_index_skip_the_deleted_rows_inside_faiss(data, tmp_path):
    vectors, langs = data
    hnsw = IndexSettings(device="cpu", index_type="hnsw")
    build(tmp_path / "ix", vectors[:COUNT], langs[:COUNT], hnsw)
    delete_documents(tmp_path / "ix", [f"d{i}" for i in range(0, COUNT, 7)])
    append(tmp_path / "ix", vectors[COUNT:COUNT + ADDED], langs[COUNT:COUNT + ADDED], COUNT)
    index = IndexReader(tmp_path / "ix")
    assert index.manifest.index["kind"] == "hnsw" and len(index.manifest.segments) == 2
    doc_ids = index.column("doc_id")
    queries = index.vectors(np.arange(0, len(index), 50))
    found = index.search(queries, 10)[1]
    assert (found >= 0).all() and (doc_ids[found[:, 0]] == doc_ids[np.arange(0, len(index), 50)]).all()
    assert not any(int(d[1:]) % 7 == 0 and int(d[1:]) < COUNT for d in doc_ids[found].ravel())
    filtered = index.search(queries, 10, np.flatnonzero(index.column("lang") == "ko"))[1]
    assert (index.column("lang")[filtered] == "ko").all()


def test_an_update_past_the_rebuild_share_or_with_a_new_language_writes_the_whole_index(data, tmp_path):
    vectors, langs = data
    build(tmp_path / "ix", vectors[:800], langs[:800])
    manifest = append(tmp_path / "ix", vectors[800:1_200], langs[800:1_200], 800)  # half as many again
    assert len(manifest.segments) == 1 and manifest.built_rows == 1_200
    manifest = append(tmp_path / "ix", vectors[1_200:1_210], np.array(["sw"] * 10), 1_200)
    assert len(manifest.segments) == 1 and manifest.languages["sw"] == 10


@pytest.mark.processes
@pytest.mark.parametrize("point", ["faiss", "parquet", "publish"])
def test_an_append_killed_anywhere_leaves_the_previous_version_serving(data, built, tmp_path, point):
    vectors, langs = data
    copy_of(built, tmp_path)
    before = IndexReader(tmp_path / "ix")
    np.save(tmp_path / "new.npy", vectors[COUNT:COUNT + ADDED])
    script = ("import sys, numpy as np; from tests.test_incremental import append; from bench.append import LANGUAGES;"
              f"append(sys.argv[1], np.load(sys.argv[2]), np.array(LANGUAGES)[np.arange({ADDED}) % 8], {COUNT})")
    killed = subprocess.run([sys.executable, "-c", script, tmp_path / "ix", tmp_path / "new.npy"], cwd=ROOT,
                            env={**os.environ, CRASH_ENV: point}, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    after = IndexReader(tmp_path / "ix")
    assert after.version == before.version and len(after) == COUNT and verify_index(tmp_path / "ix") == []
    append(tmp_path / "ix", vectors[COUNT:COUNT + ADDED], np.array(LANGUAGES)[np.arange(ADDED) % 8], COUNT)  # then works
    assert len(IndexReader(tmp_path / "ix")) == COUNT + ADDED and verify_index(tmp_path / "ix") == []


def test_verify_names_each_damaged_file_of_an_updated_index(data, built, tmp_path):
    vectors, langs = data
    copy_of(built, tmp_path)
    delete_documents(tmp_path / "ix", ["d1", "d2"])
    append(tmp_path / "ix", vectors[COUNT:COUNT + ADDED], langs[COUNT:COUNT + ADDED], COUNT)
    names = ["vectors-000001.npy", "meta-000001.parquet", "vectors.npy", "deleted.npy", "neighbour_rows.npy"]
    for name in names:
        path = tmp_path / "ix" / name
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
    problems = verify_index(tmp_path / "ix")
    assert sorted(p.split(":")[0] for p in problems) == sorted(names)
    assert all("damaged" in p for p in problems)


def test_an_append_to_an_inverted_file_is_within_the_tolerance_of_a_rebuild(tmp_path):
    """On an approximate index, neighbourhoods are searched as deep as their own target asks
    (faiss_index.neighbourhood_tuning): an append's are within TOLERANCE of a rebuild's for 99% of rows,
    though each index searches its own lists, trained apart. Searched at the queries' depth (nprobe 28
    here, against 144 and 88), 92.1% were."""
    rows = 20_000
    vectors, langs = multilingual_vectors(rows + rows // 100, seed=4)
    ivf = IndexSettings(device="cpu", index_type="ivf", scoring="margin")
    build(tmp_path / "ix", vectors[:rows], langs[:rows], ivf)
    append(tmp_path / "ix", vectors[rows:], langs[rows:], rows)
    build(tmp_path / "rebuilt", vectors, langs, ivf)
    updated, rebuilt = IndexReader(tmp_path / "ix"), IndexReader(tmp_path / "rebuilt")
    assert len(updated.manifest.segments) == 2 and updated.manifest.index["kind"] == "ivf"
    for index in (updated, rebuilt):
        assert index.neighbourhood_params["nprobe"] >= index.search_params["nprobe"]
        assert index.manifest.index["neighbourhoods_within"] >= NEIGHBOURHOOD_SHARE
    gap = np.abs(updated.neighbourhoods - rebuilt.neighbourhoods)
    assert (gap <= TOLERANCE).mean() >= 0.99, f"neighbourhoods within {TOLERANCE}: {(gap <= TOLERANCE).mean():.4f}"


def test_an_append_to_an_inverted_file_gives_the_neighbourhoods_its_own_search_gives(tmp_path, monkeypatch):
    """A new row enters the neighbours of old rows that are not among its own nearest: searched
    REVERSE_DEPTH deep, the appended index's neighbourhoods are what searching every row through it gives
    (at 32 deep, 0.9921 of rows were on 200,000). The new rows searched in several batches (REVERSE_BATCH),
    as one."""
    from xlsearch.engine.ann.faiss_index import search
    from xlsearch.engine.ranking.margin import other_document_neighbours
    from xlsearch.engine.store import incremental

    rows = 20_000
    vectors, langs = multilingual_vectors(rows + 300, seed=6)
    ivf = IndexSettings(device="cpu", index_type="ivf", scoring="parallel-margin")
    build(tmp_path / "ix", vectors[:rows], langs[:rows], ivf)
    monkeypatch.setattr(incremental, "REVERSE_BATCH", 128)
    append(tmp_path / "ix", vectors[rows:], langs[rows:], rows)
    updated = IndexReader(tmp_path / "ix")
    every = np.arange(len(updated))
    scores, found = other_document_neighbours(
        lambda queries, k: search(updated.index, queries, k, updated.neighbourhood_params),
        updated.searchable_rows(every), np.unique(updated.column("doc_id"), return_inverse=True)[1].ravel(),
        neighbour_depth("parallel-margin"))
    searched = scoring_neighbourhoods("parallel-margin", scores, found, updated.column("lang"))
    assert (np.abs(updated.neighbourhoods - searched) <= 1e-5).mean() >= 0.998


def test_neighbours_found_through_codes_are_scored_by_their_vectors_in_builds_and_appends(tmp_path):
    """An inverted file of 8-bit codes finds each row's neighbours by the codes, twice as many as kept, and
    keeps the best by exact cosine (NEIGHBOURHOOD_RERANK): the stored scores are the vectors' cosines, not
    the codes' (off by about 0.001, which reorders a row's near-equal 8th and 9th), after a build and after
    an append, whose new rows' candidates are re-scored the same way."""
    from xlsearch.engine.store.files import NEIGHBOUR_ROWS_FILE, NEIGHBOUR_SCORES_FILE

    rows = 20_000
    vectors, langs = multilingual_vectors(rows + 300, seed=7)
    codes = IndexSettings(device="cpu", index_type="IVF141,SQ8", scoring="parallel-margin")
    build(tmp_path / "ix", vectors[:rows], langs[:rows], codes)
    for appended in (False, True):
        if appended:
            append(tmp_path / "ix", vectors[rows:], langs[rows:], rows)
        index = IndexReader(tmp_path / "ix")
        assert index.manifest.index["key"] == "IVF141,SQ8" and index.neighbourhood_params["rerank"] == 2
        assert len(index.manifest.segments) == 1 + appended
        stored = np.load(index.directory / NEIGHBOUR_SCORES_FILE)
        found = np.load(index.directory / NEIGHBOUR_ROWS_FILE)
        searchable = index.searchable_rows(np.arange(len(index)))
        cosines = np.einsum("rkd,rd->rk", searchable[found], searchable)
        assert (found >= 0).all() and np.abs(stored - cosines).max() < 1e-5


@pytest.mark.skipif(not probe_gpu().usable, reason="no usable GPU")
def test_on_a_gpu_an_approximate_index_is_updated_exactly(data, tmp_path):
    """A build on a GPU finds its neighbourhoods exactly there, and so do its appends and deletes there: an
    updated inverted file's neighbourhoods are an exact search's, whatever its lists would find."""
    vectors, langs = data
    build(tmp_path / "ix", vectors[:COUNT], langs[:COUNT], IndexSettings(device="gpu", index_type="ivf",
                                                                         scoring="parallel-margin"))
    assert_exact_neighbourhoods(IndexReader(tmp_path / "ix"))
    append(tmp_path / "ix", vectors[COUNT:COUNT + ADDED], langs[COUNT:COUNT + ADDED], COUNT)
    delete_documents(tmp_path / "ix", [f"d{i}" for i in range(0, COUNT + ADDED, 97)])
    index = IndexReader(tmp_path / "ix")
    assert index.approximate and len(index.manifest.segments) == 2 and index.manifest.deleted == 63
    assert_exact_neighbourhoods(index)
