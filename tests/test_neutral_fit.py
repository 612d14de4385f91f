"""Language statistics fit by an SVD of each language's centred rows (randomized above EXACT_ROWS) find
the direction the d x d eigendecomposition found, up to sign, and so neutralise alike. Their speed is
measured in bench.neutral_fit, not here."""

import numpy as np
import pyarrow as pa
import pytest

from xlsearch.engine.ranking.neutral import EXACT_ROWS, LanguageStats, principal_directions, statistics_sample
from xlsearch.engine.store.out_of_core import document_keys


def language(rows: int, dim: int, rng: np.random.Generator, offset: float) -> np.ndarray:
    """Rows around a mean of their own, spread most along one direction, then a few weaker ones."""
    directions = np.linalg.qr(rng.standard_normal((dim, 4)))[0].T
    spread = rng.standard_normal((rows, 4)) * np.array([3.0, 1.5, 1.0, 0.8]) @ directions
    return offset + spread + 0.3 * rng.standard_normal((rows, dim))


def eigh_direction(centered: np.ndarray) -> np.ndarray:
    """What LanguageStats.fit ran before: the top eigenvector of the d x d scatter matrix."""
    return np.linalg.eigh(centered.T @ centered)[1][:, -1]


@pytest.mark.parametrize("rows, dim", [(45, 768), (EXACT_ROWS, 300), (EXACT_ROWS + 1, 300), (4 * EXACT_ROWS, 64)])
def test_the_first_direction_is_the_eigendecompositions_up_to_sign(rows, dim):
    rows_ = language(rows, dim, np.random.default_rng(rows), offset=0.0)
    centered = rows_ - rows_.mean(axis=0)
    (direction,) = principal_directions(centered, 1)
    assert abs(direction @ eigh_direction(centered)) > 1 - 1e-6
    np.testing.assert_allclose(np.linalg.norm(direction), 1, atol=1e-12)


def test_fitted_statistics_neutralise_as_the_eigendecomposition_did():
    rng = np.random.default_rng(7)
    parts = [language(rows, 256, rng, offset) for rows, offset in [(40, 0.5), (EXACT_ROWS + 200, -0.3), (300, 0.1)]]
    vectors = np.vstack(parts).astype(np.float32)
    langs = np.repeat(["de", "en", "ja"], [len(p) for p in parts])
    stats = LanguageStats.fit(vectors, langs)
    old_directions = []
    for name in stats.languages:
        own = vectors[langs == name].astype(np.float64)
        old_directions.append(eigh_direction(own - own.mean(axis=0)))
    old_basis = np.linalg.qr(np.vstack(old_directions).T)[0]
    # the same removed subspace: the projectors agree, whatever the signs and order of the columns
    np.testing.assert_allclose(stats.basis @ stats.basis.T, old_basis @ old_basis.T, atol=1e-5)
    # and so the same neutral vectors
    queries = vectors[::97]
    expected = queries - stats.means[[stats.languages.index(lang) for lang in langs[::97]]]
    expected = expected - (expected @ old_basis) @ old_basis.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(stats.neutralize(queries, langs[::97]), expected, atol=1e-5)


def test_a_large_language_is_sampled_by_document_and_the_same_rows_again_after_an_append():
    """Sampled by the documents' keys: about `per_language` rows of a language past it, all of a smaller
    one, and after 1% more rows the same sample but for about 1% of it, so that a rebuild fits the
    statistics an append kept."""
    rows = 40_000
    langs = np.array(["de", "en", "ja"])[np.minimum(np.arange(rows) % 5, 2)]  # de 8k, en 8k, ja 24k
    keys = document_keys(pa.chunked_array([[f"doc-{row}" for row in range(rows)]]))
    before = dict(statistics_sample(langs[:39_600], keys[:39_600], per_language=6_000))
    after = dict(statistics_sample(langs, keys, per_language=6_000))
    assert sorted(after) == ["de", "en", "ja"]
    for name, sample in after.items():
        assert abs(len(sample) - 6_000) < 300 and np.all(langs[sample] == name)
        assert len(np.intersect1d(sample, before[name])) > 0.97 * len(before[name])
    assert [len(rows) for _, rows in statistics_sample(langs, None, per_language=6_000)] == [8_000, 8_000, 24_000]
    assert not dict(statistics_sample(langs[:30], keys[:30]))  # none of MIN_SENTENCES rows
