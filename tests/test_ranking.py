"""Margin ranking on hand-made vectors whose neighbourhoods are known."""

import faiss
import numpy as np
import pytest

from xlsearch.engine.ranking.margin import other_document_neighbours
from xlsearch.engine.ranking.neighbourhoods import margin_scores, neighbourhood_means


def document_neighbourhoods(search, vectors, doc_ids, k):
    """Each row's margin neighbourhood as the index writer computes it: its k nearest rows of other
    documents, then their mean."""
    codes = np.unique(np.asarray(doc_ids), return_inverse=True)[1]
    return neighbourhood_means(other_document_neighbours(search, vectors, codes, k)[0], k)


def flat_index(vectors):
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def test_document_neighbourhood_skips_the_documents_own_chunks_and_counts_the_rest():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[1] = vectors[0]  # a second chunk of document a, identical to the first
    doc_ids = np.array(["a", "a", "b", "c", "d", "e", "f"], dtype=object)
    got = document_neighbourhoods(flat_index(vectors).search, vectors, doc_ids, k=2)
    cosines = vectors @ vectors.T
    for row in range(7):
        others = sorted((cosines[row, j] for j in range(7) if doc_ids[j] != doc_ids[row]), reverse=True)
        assert got[row] == pytest.approx(np.mean(others[:2]), abs=1e-5)


def test_rows_without_other_documents_in_reach_get_the_median_neighbourhood():
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 1, 2]] * 0.6 + 0.4 / 2
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = flat_index(vectors)

    def shallow_search(queries, depth):  # as an approximate index may: one hit only, the row itself
        return index.search(queries, 1)

    got = document_neighbourhoods(shallow_search, vectors, np.array(["a", "b", "c", "d"], dtype=object), k=1)
    assert np.all(np.isfinite(got))
    single = document_neighbourhoods(index.search, vectors[:1], np.array(["a"], dtype=object), k=4)
    assert single.tolist() == [0.0]  # an index of one document: nothing to compare with, no discount


def test_margin_discounts_a_hub_and_ignores_missing_rows():
    cosines = np.array([[0.80, 0.78, 0.50, 0.0]], dtype=np.float32)
    rows = np.array([[0, 1, 2, -1]])
    document_side = np.array([0.9, 0.4, 0.4], dtype=np.float32)  # row 0 is close to everything: a hub
    margins = margin_scores(cosines, rows, document_side)
    query_side = np.mean([0.80, 0.78, 0.50])
    assert margins[0, 0] == pytest.approx(0.80 / ((query_side + 0.9) / 2))
    assert margins[0, 1] > margins[0, 0]
    assert margins[0, 3] == -np.inf
