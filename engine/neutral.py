"""Language-neutral ranking. Multilingual embedders put "same language" before "same meaning": a Chinese
query's nearest neighbours are other Chinese sentences. Each language's mean vector carries most of that
language identity; subtracting it (and renormalising) leaves what the sentence says."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.vectors import normalize_rows

STATS_FILE = "languages.npz"


@dataclass
class LanguageStats:
    languages: list[str]
    means: np.ndarray  # one raw mean vector per language, in `languages` order
    counts: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray, langs: np.ndarray | list[str]) -> LanguageStats:
        langs = np.asarray(langs)
        names = sorted(set(langs.tolist()))
        means = np.vstack([np.asarray(vectors[langs == name], dtype=np.float64).mean(axis=0) for name in names])
        counts = np.array([int(np.sum(langs == name)) for name in names])
        return cls(names, means.astype(np.float32), counts)

    @property
    def fallback(self) -> np.ndarray:
        """For a language never seen: the mean of the language means, i.e. what all languages share."""
        return self.means.mean(axis=0)

    def mean_of(self, lang: str | None) -> np.ndarray:
        return self.means[self.languages.index(lang)] if lang in self.languages else self.fallback

    def detect(self, vectors: np.ndarray) -> list[str]:
        """Each vector's language by its nearest language centroid (cosine)."""
        centroids = normalize_rows(self.means)
        return [self.languages[i] for i in np.argmax(vectors @ centroids.T, axis=1)]

    def neutralize(self, vectors: np.ndarray, langs: list[str] | np.ndarray) -> np.ndarray:
        """Subtract each vector's language mean and renormalise."""
        offsets = np.vstack([self.mean_of(lang) for lang in langs]) if len(langs) else 0.0
        return normalize_rows(np.asarray(vectors, dtype=np.float32) - offsets)

    def save(self, directory: Path) -> None:
        np.savez(directory / STATS_FILE, languages=np.array(self.languages), means=self.means, counts=self.counts)

    @classmethod
    def load(cls, directory: Path) -> LanguageStats:
        with np.load(directory / STATS_FILE) as data:
            return cls(data["languages"].tolist(), data["means"], data["counts"])
