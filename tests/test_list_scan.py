"""engine.ann.list_scan against FAISS's own IVF search, on real indexes of every code it reads."""

import faiss
import numpy as np
import pytest

from xlsearch.engine.ann.faiss_index import search
from xlsearch.engine.ann.list_scan import LIST_SCAN_QUERIES, scan_lists, scannable

DIM = 65  # odd: 4-bit codes end with half a byte


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    generator = np.random.default_rng(7)
    centres = generator.standard_normal((40, DIM))
    vectors = (centres[generator.integers(0, 40, 12_000)] + 0.6 * generator.standard_normal((12_000, DIM))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def built(key: str, rows: np.ndarray, count: int | None = None) -> faiss.Index:
    index = faiss.index_factory(DIM, key, faiss.METRIC_INNER_PRODUCT)
    index.train(rows)
    index.add(rows[:count])
    return index


def faiss_search(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    return index.search(queries, k, params=params)


@pytest.mark.parametrize("key", ["IVF48,Flat", "IVF48,SQ8", "IVF48,SQ4", "IVF48,SQfp16"])
def test_the_lists_scanned_together_give_faiss_candidates_and_scores(key, rows):
    index = built(key, rows)
    queries = rows[:2_000] + np.float32(0.05)
    expected_scores, expected_rows = faiss_search(index, queries, 25, 6)
    threads = faiss.omp_get_max_threads()
    scores, found = scan_lists(scannable(index), queries, 25, 6)
    assert faiss.omp_get_max_threads() == threads
    assert np.abs(scores - expected_scores).max() < 1e-5
    # the same rows, up to the order of scores equal within float rounding
    same = [len(set(mine) & set(theirs)) for mine, theirs in zip(found, expected_rows)]
    assert min(same) >= 24 and np.mean(same) > 24.99


def test_threads_sharing_the_lists_find_what_one_thread_finds(rows):
    """Each thread keeps heaps of its own lists; their best are merged: losing a thread's share, or a
    merge that reads one thread's rows against another's scores, changes the answer."""
    index = built("IVF48,SQ8", rows)
    queries = rows[:1_500] + np.float32(0.03)
    alone = scan_lists(scannable(index), queries, 12, 9, workers=1)
    for workers in (2, 3, 7):
        shared = scan_lists(scannable(index), queries, 12, 9, workers=workers)
        assert np.abs(shared[0] - alone[0]).max() < 1e-5
        assert (shared[1] == alone[1]).mean() > 0.999
        exact = np.einsum("qkd,qd->qk", rows[shared[1]], queries)
        assert np.abs(exact - shared[0]).max() < 0.02  # each score is its own row's, within 8-bit codes' error


def scalar_quantized(kind: int, by_residual: bool, rows: np.ndarray) -> faiss.Index:
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(DIM), DIM, 48, kind, faiss.METRIC_INNER_PRODUCT, by_residual)
    index.train(rows)
    index.add(rows)
    return index


def test_residual_plain_and_uniform_codes_all_agree(rows):
    index = built("IVF48,SQ8", rows)
    assert faiss.downcast_index(index).by_residual
    others = [scalar_quantized(kind, residual, rows) for kind, residual in
              [(faiss.ScalarQuantizer.QT_8bit, False), (faiss.ScalarQuantizer.QT_8bit_uniform, True),
               (faiss.ScalarQuantizer.QT_4bit_uniform, False)]]
    for each in [index, *others]:
        expected = faiss_search(each, rows[:500], 10, 4)
        scanned = scan_lists(scannable(each), rows[:500], 10, 4)
        assert np.abs(scanned[0] - expected[0]).max() < 1e-5
        assert (scanned[1] == expected[1]).mean() > 0.999


def test_fewer_rows_in_reach_than_asked_are_marked_as_faiss_marks_them(rows):
    index = built("IVF48,SQ8", rows, count=300)
    expected_scores, expected_rows = faiss_search(index, rows[:200], 40, 1)
    scores, found = scan_lists(scannable(index), rows[:200], 40, 1)
    assert (found == expected_rows).all()
    assert (found == -1).any()
    assert np.abs(scores - expected_scores).max() < 1e-5


def test_probing_more_lists_than_there_are_scans_them_all(rows):
    index = built("IVF16,Flat", rows)
    scores, found = scan_lists(scannable(index), rows[:100], 5, 1_000)
    exact = faiss.knn(rows[:100], rows, 5, metric=faiss.METRIC_INNER_PRODUCT)
    assert (found == exact[1]).mean() > 0.99


def test_codes_it_cannot_read_and_other_metrics_are_left_to_faiss(rows):
    assert scannable(built("IVF16,PQ5", rows[:, :65])) is None
    l2 = faiss.index_factory(DIM, "IVF16,Flat", faiss.METRIC_L2)
    assert scannable(l2) is None
    assert scannable(faiss.IndexFlatIP(DIM)) is None


def test_a_large_batch_through_search_is_the_smaller_batches_answer(rows):
    """search() hands LIST_SCAN_QUERIES queries or more to the scan, and re-scores 4-bit codes' candidates
    exactly from there as it does for fewer: the two agree row for row."""
    index = built("IVF48,SQ4", rows)
    queries = np.vstack([rows, rows])[:LIST_SCAN_QUERIES + 10] + np.float32(0.02)
    params = {"nprobe": 6, "rerank": 4}
    scores, found = search(index, queries, 8, params, exact_vectors=lambda wanted: rows[wanted])
    smaller = LIST_SCAN_QUERIES // 2  # FAISS's search
    pieces = [search(index, queries[start:start + smaller], 8, params, exact_vectors=lambda wanted: rows[wanted])
              for start in range(0, len(queries), smaller)]
    assert (found == np.vstack([piece[1] for piece in pieces])).mean() > 0.999
    assert np.abs(scores - np.vstack([piece[0] for piece in pieces])).max() < 1e-5


def test_a_small_memory_budget_keeps_faiss_search_and_a_larger_one_scans_within_its_share():
    from xlsearch.engine.ann.index_types import parse_bytes
    from xlsearch.engine.store.out_of_core import (FAISS_SEARCH_BATCH, NEIGHBOUR_MEMORY_SHARE, NEIGHBOUR_SCAN_ROWS,
                                                   neighbour_batch)
    from xlsearch.engine.ranking.margin import SELF_SEARCH_BATCH
    from xlsearch.engine.ann.list_scan import scan_batch

    one_chunk_each = np.arange(1_000_000)  # a row's search asks for its depth and one more (its own chunk)
    small = neighbour_batch(parse_bytes("256MB"), 384, one_chunk_each, 8, {"nprobe": 30, "rerank": 10})
    assert small == FAISS_SEARCH_BATCH
    share = int(parse_bytes("1GB") * NEIGHBOUR_MEMORY_SHARE)
    batch = neighbour_batch(parse_bytes("1GB"), 384, one_chunk_each, 8, {"nprobe": 288})
    assert NEIGHBOUR_SCAN_ROWS <= batch <= SELF_SEARCH_BATCH
    assert scan_batch(share, 384, 9, 288) == batch and scan_batch(share // 2, 384, 9, 288) < batch
