"""Duplicate detection within one index, across languages: documents that say the same thing.

Each document is compared with its k nearest neighbours in the index itself (language-neutral vectors)
and scored by LASER's ratio margin: the cosine divided by the mean cosine of both documents to their own
k nearest neighbours. A translation or a copy stands out from a document's neighbourhood; a document
that is merely close to everything (a hub) does not. Pairs at or above the threshold are linked, and
linked documents form groups (transitively).

The default threshold comes from the index itself: Otsu's split of every document's two best margins.
A document's best margin is to its duplicate or translation where it has one; its second best, where it
has only one, is to something it merely resembles, and so is the best margin of a document without any.
These values fall into two populations, and Otsu's rule picks the cut that best separates them (the
largest between-class variance). Taking the second best too keeps the unrelated population present even
when every document has a duplicate (a fully parallel corpus). On an index with no duplicates at all
the rule still cuts somewhere: give a threshold there. Where each text has several versions (8
translations of every demo sentence), a translation's neighbourhood is its other translations, its
margin stays near 1, and the fitted cut lets some unrelated pairs in."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xlsearch.engine.apps.documents import DocumentRows
from xlsearch.engine.errors import InputError
from xlsearch.engine.ranking.margin import MARGIN_K, neighbourhood, other_document_neighbours, ratio_margin
from xlsearch.engine.store.reader import IndexReader

Progress = Callable[[int, int], None]


@dataclass
class CandidatePairs:
    """Document pairs that are among each other's k nearest neighbours, with their ratio margins."""

    left: np.ndarray  # document positions (DocumentRows order), left < right
    right: np.ndarray
    margins: np.ndarray

    def subset(self, keep: np.ndarray) -> CandidatePairs:
        return CandidatePairs(self.left[keep], self.right[keep], self.margins[keep])

    def top_margins(self, per_document: int) -> np.ndarray:
        """The `per_document` highest margins of every document (fewer where it has fewer candidates)."""
        documents = np.concatenate([self.left, self.right])
        margins = np.concatenate([self.margins, self.margins])
        order = np.lexsort((-margins, documents))
        documents, margins = documents[order], margins[order]
        first = np.searchsorted(documents, documents)  # where each document's run starts
        return margins[np.arange(len(documents)) - first < per_document]


@dataclass
class DuplicateGroup:
    documents: list[dict]  # id, lang, text of each member, in index order
    margin: float  # the weakest link that holds the group together

    def to_dict(self) -> dict:
        languages = sorted({d["lang"] for d in self.documents})
        return {"size": len(self.documents), "languages": languages, "margin": round(self.margin, 4),
                "documents": self.documents}


@dataclass
class Duplicates:
    threshold: float
    threshold_rule: str  # how the threshold was chosen
    groups: list[DuplicateGroup]
    members: list[np.ndarray] = field(repr=False)  # each group's document positions, for evaluation
    pairs: CandidatePairs = field(repr=False)
    documents: DocumentRows = field(repr=False)


def candidate_pairs(index: IndexReader, documents: DocumentRows, k: int = MARGIN_K,
                    progress: Progress | None = None, queries: np.ndarray | None = None) -> CandidatePairs:
    """Every document's k nearest other documents (chunks of one document never pair with each other;
    a chunked pair keeps its best-scoring chunks), scored by ratio margin. Each row asks with its stored
    vector, or with its row of `queries` (its text embedded as a query of a task)."""
    if k < 1:
        raise InputError("must be at least 1", field="k", value=k)
    k = min(k, len(documents) - 1)
    if k < 1:
        return CandidatePairs(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.float64)))
    asking = index.vectors() if queries is None else queries
    scores, rows = other_document_neighbours(index.search, asking, documents.of_row, k, progress)
    found = rows >= 0  # false only where a tiny index has fewer than k others
    near = neighbourhood(scores, k)
    margins = ratio_margin(scores, near, near[np.maximum(rows, 0)])[found].astype(np.float64)
    a = np.repeat(documents.of_row, k)[found.ravel()]
    b = documents.of_row[rows[found]]
    left, right = np.minimum(a, b), np.maximum(a, b)
    # The same document pair comes up from both sides and from several chunks: keep its best margin.
    by_margin = np.argsort(-margins, kind="stable")
    _, first = np.unique((left * len(documents) + right)[by_margin], return_index=True)
    keep = by_margin[first]
    return CandidatePairs(left[keep], right[keep], margins[keep])


def otsu_threshold(values: np.ndarray) -> float:
    """The cut between two populations of `values` with the largest between-class variance; halfway
    between the two values it falls between."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    if len(values) == 0:
        return float(np.inf)
    if values[0] == values[-1]:  # one population: a cut just above it, so nothing is linked
        return float(np.nextafter(values[-1], np.inf))
    total = len(values)
    below = np.arange(1, total)
    sums = np.cumsum(values)[:-1]
    mean_below = sums / below
    mean_above = (values.sum() - sums) / (total - below)
    variance = below * (total - below) * (mean_below - mean_above) ** 2
    variance[values[:-1] == values[1:]] = -1  # a cut must fall between two different values
    cut = int(np.argmax(variance))
    return float((values[cut] + values[cut + 1]) / 2)


def link_groups(documents: int, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Connected components of the linked pairs, as sorted document positions; singletons left out."""
    parent = np.arange(documents)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(node) for node in range(documents)], dtype=np.int64)
    by_root = np.argsort(roots, kind="stable")
    starts = np.flatnonzero(np.diff(roots[by_root], prepend=-1))
    components = np.split(by_root, starts[1:])
    return [members for members in components if len(members) > 1]


def find_duplicates(index: IndexReader, threshold: float | None = None, cross_lingual_only: bool = False,
                    k: int = MARGIN_K, progress: Progress | None = None, queries: np.ndarray | None = None) -> Duplicates:
    """Groups of documents that say the same thing. With `cross_lingual_only`, only pairs in two
    different languages link documents (and the default threshold is fitted on those pairs). `queries`:
    each row's text as a query of a task (task_queries.rows_as_queries), asked instead of its stored vector."""
    documents = DocumentRows.of(index)
    pairs = candidate_pairs(index, documents, k, progress, queries)
    langs = index.column("lang")[documents.first_rows].astype(str)
    if cross_lingual_only:
        pairs = pairs.subset(langs[pairs.left] != langs[pairs.right])
    if threshold is None:
        threshold = otsu_threshold(pairs.top_margins(2))
        rule = "Otsu split of each document's two best margins"
    else:
        rule = "given"
    linked = pairs.subset(pairs.margins >= threshold)
    members = link_groups(len(documents), linked.left, linked.right)
    return Duplicates(float(threshold), rule, describe_groups(index, documents, linked, members), members,
                      pairs, documents)


def describe_groups(index: IndexReader, documents: DocumentRows, linked: CandidatePairs,
                    members: list[np.ndarray]) -> list[DuplicateGroup]:
    group_of = np.full(len(documents), -1)
    for number, positions in enumerate(members):
        group_of[positions] = number
    weakest = np.full(len(members), np.inf)
    np.minimum.at(weakest, group_of[linked.left], linked.margins)
    groups = []
    for number, positions in enumerate(members):
        rows = index.rows(documents.first_rows[positions], ["lang", "text", "extra"])
        described = [{"id": str(doc_id), "lang": str(row["lang"]), "text": str(row["text"]),
                      **(json.loads(row["extra"]) if row["extra"] else {})}
                     for doc_id, row in zip(documents.ids[positions], rows)]
        groups.append(DuplicateGroup(described, float(weakest[number])))
    return groups
