"""Language-neutral ranking. Multilingual embedders put "same language" before "same meaning": a Chinese
query's nearest neighbours are other Chinese sentences. Each language's mean vector carries most of that
language identity, and the main direction along which the language's sentences spread carries more.
Subtracting the mean, projecting out those directions and renormalising leaves what the sentence says.

Measured on Tatoeba (cmn, jpn, kor, deu, ara + English, pooled, fitted on held-out sentences): average
recall@1 0.32 -> 0.70, same-language share of the top 10 0.88 -> 0.21; see `xlsearch eval`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlsearch.engine.vectors import normalize_rows

STATS_FILE = "languages.npz"
METHOD = "center+lir1"  # per-language centering, then each language's first principal direction removed
REMOVED_DIRECTIONS = 1  # more removed less on Tatoeba (r=2: 0.695, r=4: 0.683 vs r=1: 0.705 avg recall@1)
# A mean of a handful of sentences is mostly their meaning, not their language: such languages get the
# shared fallback instead of a mean of their own.
MIN_SENTENCES = 20
# Up to this many sentences, a language's directions come from an exact SVD of its centred rows: 0.1 s
# for 256 x 2,560, but 1.4 s for 1,024 rows and 9.5 s for 2,048 (it grows with the rows squared). Above,
# a randomized SVD: under 0.1 s up to 4,096 rows, growing with the rows. Both replace a d x d
# eigendecomposition (O(d^3) whatever the rows); bench.neutral_fit measures them.
EXACT_ROWS = 256
NEUTRALIZE_ROWS = 8192  # rows neutralised at once: 12 MB per temporary at 384 dims
# The randomized SVD (Halko, Martinsson and Tropp 2011): a sketch of this many directions beyond those
# kept, sharpened by power iterations; its error shrinks as (s[k+1] / s[1]) ** (2 * iterations + 1). On
# 1,000 Tatoeba sentences of one language (e5; for cmn the second singular value is 0.92 of the first,
# the 12th 0.55), 4 iterations agreed with the exact direction to |cosine| 0.999998, 6 to 0.99999998.
OVERSAMPLING = 10
POWER_ITERATIONS = 6
# A language's mean and main direction from this many of its rows (a sample, statistics_sample) are as
# good as from all: the mean's error shrinks as 1/sqrt(n), and the randomized SVD of 20,000 x 384 takes
# well under a second. Gathered one language at a time: 8 languages of 50,000 rows at once raised a 1M
# out-of-core build's peak RSS to 1.3 GB (bench.out_of_core, 256MB budget).
SAMPLE_ROWS_PER_LANGUAGE = 20_000


def principal_directions(centered: np.ndarray, count: int) -> np.ndarray:
    """The first `count` principal directions of rows already centred, as rows of unit length (the sign
    is arbitrary): their top right singular vectors, exactly up to EXACT_ROWS rows, else randomized (with
    a fixed seed, so that equal builds fit equal statistics)."""
    if len(centered) <= EXACT_ROWS:
        return np.linalg.svd(centered, full_matrices=False)[2][:count]
    sketch = centered @ np.random.default_rng(0).standard_normal((centered.shape[1], count + OVERSAMPLING))
    for _ in range(POWER_ITERATIONS):  # re-orthonormalised each time, so the small directions keep their digits
        sketch = centered @ np.linalg.qr(centered.T @ np.linalg.qr(sketch)[0])[0]
    return np.linalg.svd(np.linalg.qr(sketch)[0].T @ centered, full_matrices=False)[2][:count]


def statistics_sample(langs: np.ndarray, keys: np.ndarray | None = None,
                      per_language: int = SAMPLE_ROWS_PER_LANGUAGE) -> Iterator[tuple[str, np.ndarray]]:
    """(language, the rows its statistics are fitted on) for each language of at least MIN_SENTENCES rows,
    in name order. Without `keys`, all of them. With `keys` (each row's document as a 64-bit hash, uniform:
    out_of_core.document_keys), a language of more than `per_language` rows is sampled: the rows whose key
    falls below per_language / its rows, about per_language of them, and the same ones again when the same
    documents and a few more are indexed. So a build fits the statistics that an earlier build updated
    in place has: on 1M rows in 8 languages and 1% appended, drawn at random the two samples' statistics
    moved 10.6% of the rows' neighbourhoods by more than 0.002 (exact search on both sides), drawn by key
    none (99th percentile 0.0004)."""
    uniform = None if keys is None else (np.asarray(keys).view(np.uint64) >> np.uint64(11)) / 2.0 ** 53
    for name in np.unique(langs):
        rows = np.flatnonzero(langs == name)
        if len(rows) < MIN_SENTENCES:
            continue
        if uniform is not None and len(rows) > per_language:
            rows = rows[uniform[rows] < per_language / len(rows)]
        yield str(name), rows


@dataclass
class LanguageStats:
    languages: list[str]
    means: np.ndarray  # one raw mean vector per language, in `languages` order
    counts: np.ndarray
    basis: np.ndarray  # orthonormal columns spanning the removed language directions

    @classmethod
    def fit(cls, vectors: np.ndarray, langs: np.ndarray | list[str], keys: np.ndarray | None = None) -> LanguageStats | None:
        """Statistics of each language with at least MIN_SENTENCES vectors, from all of them or, with
        `keys`, from statistics_sample's; None when fewer than two languages have that many (there is no
        language bias to measure)."""
        return cls.fit_groups((name, vectors[rows]) for name, rows in statistics_sample(np.asarray(langs), keys))

    @classmethod
    def fit_groups(cls, groups: Iterable[tuple[str, np.ndarray]]) -> LanguageStats | None:
        """fit() from (language, its vectors) pairs in name order, each language with at least
        MIN_SENTENCES: one language's vectors in memory at a time when `groups` gathers them lazily."""
        names, means, counts, directions = [], [], [], []
        for name, rows in groups:
            centered = np.asarray(rows, dtype=np.float64)  # a copy, centred in place
            names.append(name)
            means.append(centered.mean(axis=0))
            counts.append(len(centered))
            centered -= means[-1]
            directions.append(principal_directions(centered, REMOVED_DIRECTIONS))
            del centered
        if len(names) < 2:
            return None
        basis = np.linalg.qr(np.vstack(directions).T)[0]
        return cls(names, np.vstack(means).astype(np.float32), np.array(counts), basis.astype(np.float32))

    @property
    def fallback(self) -> np.ndarray:
        """For a language never seen: the mean of the language means, i.e. what all languages share."""
        return self.means.mean(axis=0)

    def mean_of(self, lang: str | None) -> np.ndarray:
        return self.means[self.languages.index(lang)] if lang in self.languages else self.fallback

    def detect(self, vectors: np.ndarray) -> list[str]:
        """Each raw vector's language by its nearest language centroid (cosine); 99.6% right on Tatoeba."""
        centroids = normalize_rows(self.means)
        return [self.languages[i] for i in np.argmax(np.atleast_2d(vectors) @ centroids.T, axis=1)]

    def neutralize(self, vectors: np.ndarray, langs: list[str] | np.ndarray) -> np.ndarray:
        """The language-neutral form of raw vectors whose languages are `langs`."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            return vectors
        # each distinct language's mean looked up once: per row, the look-up took 4 s of an update's 50k rows
        names, which = np.unique(np.asarray(langs, dtype=str), return_inverse=True)
        means, which = np.vstack([self.mean_of(name) for name in names]), which.ravel()
        result = np.empty_like(vectors)
        # a block at a time: the steps' temporaries are each as large as their input, five of them at once
        for start in range(0, len(vectors), NEUTRALIZE_ROWS):
            block = slice(start, start + NEUTRALIZE_ROWS)
            centered = vectors[block] - means[which[block]]
            result[block] = normalize_rows(centered - (centered @ self.basis) @ self.basis.T)
        return result

    def save(self, directory: Path) -> None:
        np.savez(directory / STATS_FILE, languages=np.array(self.languages), means=self.means,
                 counts=self.counts, basis=self.basis)

    @classmethod
    def load(cls, directory: Path) -> LanguageStats:
        with np.load(directory / STATS_FILE) as data:
            return cls(data["languages"].tolist(), data["means"], data["counts"], data["basis"])
