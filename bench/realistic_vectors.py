"""Vectors that look like real sentence embeddings, at any count: real embeddings of Tatoeba sentences
(the local model, several languages) give a mean and a covariance; synthetic vectors are drawn from that
Gaussian and renormalised. Nothing at 2560 dimensions can be embedded here (Qwen3-Embedding-4B needs a
GPU and its weights), so 2560-d vectors place the 384-d Gaussian in a random 384-d subspace and fill the
other directions with isotropic noise at the level of its weakest eigenvalue: an assumption, said so in
every report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.embedders import create_embedder
from engine.cache import default_cache_path

TATOEBA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "tatoeba"
LANGUAGES = ("cmn", "jpn", "kor", "deu", "fra", "spa", "rus", "ara")
CHUNK = 100_000


def real_embeddings(per_language: int = 500) -> np.ndarray:
    """Local-model document embeddings of Tatoeba sentences: each language's side and English."""
    texts: list[str] = []
    for lang in LANGUAGES:
        for side in (lang, "eng"):
            lines = (TATOEBA / f"tatoeba.{lang}-eng.{side}").read_text(encoding="utf-8").splitlines()
            texts += [line.strip() for line in lines[:per_language] if line.strip()]
    embedder = create_embedder("local", cache_path=default_cache_path())
    try:
        return embedder.embed_documents(list(dict.fromkeys(texts)))
    finally:
        embedder.close()


class FittedGaussian:
    def __init__(self, sample: np.ndarray, dim: int | None = None, seed: int = 0) -> None:
        sample = np.asarray(sample, dtype=np.float64)
        self.mean = sample.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov(sample, rowvar=False))
        values = np.clip(values, 0, None)
        self.transform = vectors * np.sqrt(values)  # y = mean + z @ transform.T has the fitted covariance
        self.dim = dim or sample.shape[1]
        self.noise = 0.0
        self.rng = np.random.default_rng(seed)
        if self.dim > sample.shape[1]:
            basis = np.linalg.qr(self.rng.normal(size=(self.dim, sample.shape[1])))[0]
            self.mean, self.transform = basis @ self.mean, basis @ self.transform
            self.noise = float(np.sqrt(values[values > 0].min()))

    def draw(self, count: int) -> np.ndarray:
        """`count` unit vectors, float32, generated a chunk at a time to bound memory."""
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            block = self.mean + self.rng.standard_normal((n, self.transform.shape[1])) @ self.transform.T
            if self.noise:
                block += self.noise * self.rng.standard_normal((n, self.dim))
            out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out
