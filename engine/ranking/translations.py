"""Neighbourhoods that leave out a document's translations and copies (`--scoring parallel-margin`).

The ratio margin divides a cosine by the mean cosine of the document to its nearest neighbours, to take
away the advantage of hubs: documents close to everything. Where a corpus holds the same text in several
languages, a document's nearest neighbours are its own translations, so the margin discounts exactly the
documents that have them: on the demo corpus (8 versions of 40 sentences, and 40 sentences with none)
"weather walk" ranked a skiing sentence without translations (cosine 0.21) above the weather sentence
(0.30). Translations are not hubness. Here a document's likely translations are found from its own
neighbour list and left out of its neighbourhood, where it has several of them (a corpus that is parallel
there); a document with one (a bitext, where the margin's discount measured better) keeps it. A
near-duplicate (NEAR_DUPLICATE_COSINE) is left out wherever it is: a copy is not hubness either.

A likely translation of row i is a neighbour j in another language that is i's nearest row of j's language,
with i j's nearest row of i's language (mutual, as in bitext mining), at a cosine of at least
TRANSLATION_COSINE. Both are read from the rows' neighbour lists, as deep as they were searched."""

from __future__ import annotations

import numpy as np

PARALLEL_MARGIN = "parallel-margin"  # the scoring's name (engine.store.settings)
# The constants were chosen on the fit halves of evaluation.suite's five benchmarks (`xlsearch eval --suite`),
# over depths 8/16/32, 2 or 3 translations and cosines 0.3/0.4/0.5: the choice whose worst benchmark stays
# furthest above the better of cosine and margin less a standard error, among those that rank a weather
# document first for "weather walk" and "weather" on the demo (depth 8 with cosine 0.5 missed "weather";
# depth 16 and 32 with 3 translations fell below on the paragraph set). README, "Language-neutral ranking".
#
# How deep each row's neighbours are searched to find its translations among them: on the demo, 6.3 of each
# grouped sentence's 7 translations are found among its 8 nearest.
TRANSLATION_DEPTH = 8
# Between the cosines of mutual nearest neighbours that are translations and those that are not: median
# 0.65 and 0.47 on Tatoeba pooled (language-neutral e5; short sentences, many alike), 0.58 and 0.22 on the
# demo corpus.
TRANSLATION_COSINE = 0.4
# A row with fewer likely translations keeps them in its neighbourhood: in a bitext (Tatoeba pooled, one
# translation each) leaving the one out measured worse than the plain margin.
MIN_TRANSLATIONS = 3
# Rows whose neighbour lists are compared at once: each step's temporaries are a block's (neighbours of
# neighbours: rows x depth x depth), not the index's (at 1M rows the pairs sorted whole took about 450 MB)
BLOCK_ROWS = 65_536
# A neighbour this close is a copy (Tatoeba pooled repeats English sentences across its pairs), left out
# whatever the row's translations: on Tatoeba's fit half recall@1 0.710 -> 0.720 and mAP 0.795 -> 0.800, no
# other benchmark changed. 0.95 and 0.9 measured the same within a standard error, but in an index without
# language-neutral vectors (one language) e5's cosines of merely similar sentences reach them: 8.6% of
# Tatoeba's English sentences have a neighbour at 0.95 or more ("We should go to sleep." and "You should
# sleep.", 0.950).
NEAR_DUPLICATE_COSINE = 0.99


def first_of_each_language(rows: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """For each row's neighbours (best first; -1 where none), whether each is the first of its language
    in that list and of another language than the row's own. `langs` numbers each row's language."""
    first = np.zeros(rows.shape, dtype=bool)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        found = rows[block] >= 0
        neighbour_langs = np.where(found, langs[np.maximum(rows[block], 0)], -1)
        here = found & (neighbour_langs != langs[block, None])
        for position in range(1, rows.shape[1]):
            seen = (neighbour_langs[:, :position] == neighbour_langs[:, position:position + 1]).any(axis=1)
            here[:, position] &= ~seen
        first[block] = here
    return first


def likely_translations(scores: np.ndarray, rows: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """Which of each row's neighbours (scores and rows best first, as other_document_neighbours gives
    them) are likely its translations (module docstring): a boolean mask of their shape. Mutual: the
    neighbour has the row among its own first-of-their-language neighbours."""
    first = first_of_each_language(rows, langs)
    mutual = np.zeros(rows.shape, dtype=bool)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        neighbours = np.maximum(rows[block], 0)
        itself = np.arange(start, start + len(neighbours))[:, None, None]
        mutual[block] = first[block] & ((rows[neighbours] == itself) & first[neighbours]).any(axis=2)
    return mutual & (scores >= TRANSLATION_COSINE)


def translations_left_out(scores: np.ndarray, rows: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """Each row's neighbour scores with its likely translations set to -inf (missing) where it has
    MIN_TRANSLATIONS or more of them, and its near-duplicates always: what neighbourhood_means then
    averages."""
    translations = likely_translations(scores, rows, langs)
    parallel = translations.sum(axis=1) >= MIN_TRANSLATIONS
    copies = scores >= NEAR_DUPLICATE_COSINE
    return np.where((translations & parallel[:, None]) | copies, -np.inf, scores)
