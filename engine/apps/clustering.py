"""Clustering by meaning across languages: k-means over the documents' language-neutral vectors, so
feedback in many languages groups by what it says without being translated first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import faiss
import numpy as np

from xlsearch.engine.apps.documents import DocumentRows
from xlsearch.engine.errors import InputError
from xlsearch.engine.store.reader import IndexReader

SEED = 1234  # fixed, so the same index always gives the same clusters
ITERATIONS = 25
RESTARTS = 5  # k-means runs from different starts; the one with the tightest clusters is kept


@dataclass
class Cluster:
    size: int
    languages: dict[str, int]  # documents per language, most first
    representatives: dict[str, list[dict]]  # per language: the documents nearest the centroid
    members: list[str] = field(repr=False)  # every document id in the cluster

    def to_dict(self) -> dict:
        return {"size": self.size, "languages": self.languages, "representatives": self.representatives,
                "members": self.members}


@dataclass
class Clustering:
    clusters: list[Cluster]  # largest first
    labels: np.ndarray = field(repr=False)  # each document's cluster (a position in `clusters`)
    documents: DocumentRows = field(repr=False)


def cluster_documents(index: IndexReader, clusters: int, per_language: int = 2, seed: int = SEED) -> Clustering:
    """k-means (FAISS, spherical) over one vector per document; each cluster described by its size, its
    languages and, per language, the `per_language` documents nearest its centroid."""
    documents = DocumentRows.of(index)
    if not 1 <= clusters <= len(documents):
        raise InputError(f"-n {clusters}: must be between 1 and the index's {len(documents)} documents")
    vectors = documents.mean_vectors(index.vectors())
    # min_points_per_centroid=1: a small index is fine to cluster (faiss would warn below 39 per cluster).
    kmeans = faiss.Kmeans(vectors.shape[1], clusters, niter=ITERATIONS, nredo=RESTARTS, seed=seed, spherical=True,
                          verbose=False, min_points_per_centroid=1, max_points_per_centroid=1_000_000)
    kmeans.train(vectors)
    closeness, assigned = kmeans.index.search(vectors, 1)
    closeness, assigned = closeness[:, 0], assigned[:, 0]
    by_size = np.argsort(-np.bincount(assigned, minlength=clusters), kind="stable")
    labels = np.argsort(by_size)[assigned]  # renumbered so that cluster 0 is the largest
    langs = np.array([str(lang) for lang in index.column("lang")[documents.first_rows]])
    texts = index.column("text")
    described = []
    for number in range(clusters):
        members = np.flatnonzero(labels == number)
        if len(members) == 0:
            continue
        representatives = {}
        for lang, _ in Counter(langs[members].tolist()).most_common():
            own = members[langs[members] == lang]
            nearest = own[np.argsort(-closeness[own], kind="stable")[:per_language]]
            representatives[lang] = [{"id": str(documents.ids[d]), "text": str(texts[documents.first_rows[d]]),
                                      "score": round(float(closeness[d]), 4)} for d in nearest]
        described.append(Cluster(len(members), dict(Counter(langs[members].tolist()).most_common()), representatives,
                                 [str(i) for i in documents.ids[members]]))
    return Clustering(described, labels, documents)


def groups_kept_together(labels: np.ndarray, groups: list[str | None]) -> dict:
    """How often every member of a known group (e.g. all translations of one sentence) lands in one
    cluster; documents without a group are not counted."""
    clusters_of: dict[str, set[int]] = {}
    for label, group in zip(labels.tolist(), groups):
        if group is not None:
            clusters_of.setdefault(group, set()).add(label)
    together = sum(len(found) == 1 for found in clusters_of.values())
    return {"groups": len(clusters_of), "together": together,
            "share": round(together / len(clusters_of), 4) if clusters_of else 0.0}
