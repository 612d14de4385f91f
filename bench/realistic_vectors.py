"""Vectors that look like real sentence embeddings, at any count. Real ones first: the local model's
embeddings of distinct Tatoeba sentences of every language (real_vectors, through the embedding cache).
Beyond what can be embedded here, vectors are drawn from a Gaussian mixture fitted to them (FittedMixture;
bench.vector_realism compares mixtures with the real vectors). Nothing at 2560 dimensions can be embedded
here (Qwen3-Embedding-4B needs a GPU and its weights), so 2560-d vectors place the 384-d mixture in a
random 384-d subspace and fill the other directions with isotropic noise at the level of its weakest
eigenvalue: an assumption, said so in every report.

This module imports only numpy and faiss at load (the embedder on first use), so that bench.gpu can draw
from the shipped mixture (SHIPPED_MIXTURE) on a machine without the embedding model."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from bench import tatoeba_files

CHUNK = 100_000
EMBED_WINDOW = 2_048
MIXTURE_COMPONENTS = 64  # the generator of the larger benchmark sets, chosen by bench.vector_realism (docs/benchmarks.md)
# The mixture bench.gpu draws from, shipped because the GPU machine has no embedding model: MIXTURE_COMPONENTS
# components fitted to SHIPPED_SENTENCES real embeddings (write_shipped_mixture makes it). Fewer than the
# 100,000 of `make bench` (20 minutes to embed here), still over 450 points per component.
SHIPPED_MIXTURE = Path(__file__).with_name("mixture64_tatoeba30k.npz")
SHIPPED_SENTENCES = 30_000


def tatoeba_sentences(count: int) -> list[tuple[str, str]]:
    """Up to `count` distinct Tatoeba sentences with the language of their file (ISO 639-3), a line from
    every file in turn (112 languages and their English sides), so that any prefix mixes every language."""
    files = tatoeba_files()
    columns = [[(line.strip(), path.suffix[1:]) for line in path.read_text(encoding="utf-8").splitlines()] for path in files]
    distinct: dict[str, str] = {}
    for row in itertools.zip_longest(*columns, fillvalue=("", "")):
        for text, lang in row:
            if text and text not in distinct:
                distinct[text] = lang
                if len(distinct) == count:
                    return list(distinct.items())
    return list(distinct.items())


def real_vectors(count: int, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Local-model embeddings of tatoeba_sentences(count), in that order; the first run embeds them
    (100,000 take about 20 minutes on 2 cores), later runs read the cache."""
    return embed([text for text, _ in tatoeba_sentences(count)], progress)


def held_out(real: np.ndarray, queries: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(base, queries): `queries` rows (a fifth at most) picked at random and left out of the base."""
    picked = np.random.default_rng(seed).choice(len(real), min(queries, len(real) // 5), replace=False)
    return np.delete(real, picked, axis=0), real[picked]


def embed(texts: list[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Document embeddings by the local model, through the embedding cache, a window at a time: an
    interrupted run keeps what it embedded, and a second run embeds nothing."""
    from xlsearch.engine.embedders import create_embedder
    from xlsearch.engine.embedders.cache import default_cache_path

    embedder = create_embedder("local", cache_path=default_cache_path())
    try:
        parts = []
        for start in range(0, len(texts), EMBED_WINDOW):
            parts.append(embedder.embed_documents(texts[start:start + EMBED_WINDOW]))
            if progress:
                progress(min(start + EMBED_WINDOW, len(texts)), len(texts))
        return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    finally:
        embedder.close()


class FittedMixture:
    """A Gaussian mixture fitted to real embeddings: k-means centres (weighted by their sizes) and one
    covariance of the points around their centres, shared by every component (a few hundred points per
    centre could not estimate a 384 x 384 covariance each). One component is the plain fitted Gaussian,
    which has none of real embeddings' topical clusters; bench.vector_realism measures which resembles
    real embeddings for nearest-neighbour search."""

    def __init__(self, sample: np.ndarray, components: int = 1, dim: int | None = None, seed: int = 0) -> None:
        sample = np.asarray(sample, dtype=np.float32)
        if components == 1:
            self.means, assignment = sample.mean(axis=0, keepdims=True), np.zeros(len(sample), np.int64)
        else:
            kmeans = faiss.Kmeans(sample.shape[1], components, niter=20, seed=seed, max_points_per_centroid=len(sample))
            kmeans.train(sample)
            self.means, assignment = kmeans.centroids.astype(np.float64), kmeans.index.search(sample, 1)[1][:, 0]
        self.weights = np.bincount(assignment, minlength=len(self.means)) / len(sample)
        residuals = sample.astype(np.float64) - self.means[assignment]
        values, vectors = np.linalg.eigh(residuals.T @ residuals / (len(sample) - len(self.means)))
        values = np.clip(values, 0, None)
        self.transform = vectors * np.sqrt(values)  # means[c] + z @ transform.T has the fitted covariance
        self.dim = dim or sample.shape[1]
        self.noise = 0.0
        self.rng = np.random.default_rng(seed)
        if self.dim > sample.shape[1]:
            basis = np.linalg.qr(self.rng.normal(size=(self.dim, sample.shape[1])))[0]
            self.means, self.transform = self.means @ basis.T, basis @ self.transform
            self.noise = float(np.sqrt(values[values > 0].min()))

    def save(self, path: Path, note: str) -> None:
        """The fitted parameters as float32 (enough to draw from, see load); `note` says how they were made."""
        np.savez_compressed(path, means=self.means.astype(np.float32), weights=self.weights,
                            transform=self.transform.astype(np.float32), noise=np.float64(self.noise), note=np.array(note))

    @classmethod
    def load(cls, path: Path, seed: int = 0) -> FittedMixture:
        """The mixture whose parameters save() wrote, at their dimension, drawing with a fresh `seed`."""
        mixture = cls.__new__(cls)  # the fit in __init__ is what the file replaces
        with np.load(path) as saved:
            mixture.means, mixture.transform = (saved[name].astype(np.float64) for name in ("means", "transform"))
            mixture.weights, mixture.noise = saved["weights"], float(saved["noise"])
        mixture.dim = mixture.means.shape[1]
        mixture.rng = np.random.default_rng(seed)
        return mixture

    def draw(self, count: int) -> np.ndarray:
        """`count` unit vectors, float32, generated a chunk at a time to bound memory."""
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            centres = self.rng.choice(len(self.means), size=n, p=self.weights)
            block = self.means[centres] + self.rng.standard_normal((n, self.transform.shape[1])) @ self.transform.T
            if self.noise:
                block += self.noise * self.rng.standard_normal((n, self.dim))
            out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out


def write_shipped_mixture(count: int = SHIPPED_SENTENCES, path: Path = SHIPPED_MIXTURE) -> Path:
    """Refit the mixture bench.gpu ships: `count` real embeddings (real_vectors: 30,000 take about 7 minutes
    on 2 cores the first time), MIXTURE_COMPONENTS components, seed 0. `python -m bench.realistic_vectors`."""
    mixture = FittedMixture(real_vectors(count), MIXTURE_COMPONENTS)
    mixture.save(path, note=f"FittedMixture of {MIXTURE_COMPONENTS} components (seed 0) fitted to the local model's "
                            f"embeddings of {count:,} distinct Tatoeba sentences (bench.realistic_vectors.real_vectors); "
                            "remake with `python -m bench.realistic_vectors`")
    return path


if __name__ == "__main__":
    print(write_shipped_mixture())
