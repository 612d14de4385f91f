"""Language statistics fit by an SVD of each language's centred rows (randomized above EXACT_ROWS) find
the direction the d x d eigendecomposition found, up to sign, and so neutralise alike. Their speed is
measured in bench.neutral_fit, not here."""

import numpy as np
import pytest

from xlsearch.engine.ranking.neutral import EXACT_ROWS, LanguageStats, principal_directions


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
