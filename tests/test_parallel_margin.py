"""parallel-margin, the default scoring: a document's likely translations are left out of its margin
neighbourhood where it has several. Hand-made lists for the bookkeeping, then the demo corpus's real
vectors and index (in-process: the real model, FAISS and files)."""

import json

import numpy as np
import pytest

import xlsearch
from xlsearch.engine.ann.neighbours import exact_neighbours
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.ranking.neighbourhoods import neighbourhood_means, scoring_neighbourhoods
from xlsearch.engine.ranking.neutral import LanguageStats
from xlsearch.engine.ranking.translations import (MIN_TRANSLATIONS, NEAR_DUPLICATE_COSINE, TRANSLATION_DEPTH,
                                                  first_of_each_language, likely_translations, translations_left_out)
from xlsearch.engine.store.settings import IndexSettings
from tests.conftest import DEMO_CORPUS

DEMO = [json.loads(line) for line in (DEMO_CORPUS / "demo.jsonl").read_text(encoding="utf-8").splitlines()]


def test_first_of_each_language_and_mutual_translations_on_hand_made_lists():
    langs = np.array([0, 1, 1, 2])  # rows 1 and 2 share a language
    rows = np.array([[1, 2, 3], [0, 3, 2], [0, 3, 1], [0, 2, 1]])
    scores = np.array([[0.9, 0.8, 0.7], [0.9, 0.5, 0.2], [0.8, 0.45, 0.2], [0.7, 0.45, 0.5]], dtype=np.float32)
    assert first_of_each_language(rows, langs).tolist() == [
        [True, False, True],   # row 2 comes after row 1, of the same language
        [True, True, False],   # row 2 is row 1's own language
        [True, True, False],
        [True, True, False],   # row 1 after row 2, of the same language
    ]
    # mutual: 0-1, 0-3 and 2-3 (each the other's first of its language); row 1's first of language 2 is 3,
    # but 3's first of language 1 is 2, and row 2's first of language 0 is 0, but 0's is 1
    assert likely_translations(scores, rows, langs).tolist() == [
        [True, False, True], [True, False, False], [False, True, False], [True, True, False]]
    low = scores.copy()
    low[0, 2] = 0.1  # under TRANSLATION_COSINE: another sentence, not a translation
    assert not likely_translations(low, rows, langs)[0, 2]


def test_rows_with_few_translations_keep_them():
    langs = np.array([0, 1, 2, 3, 0])
    rows = np.array([[1, 2, 3, 4], [0, 4, 2, 3], [0, 4, 1, 3], [0, 4, 1, 2], [0, 1, 2, 3]])
    scores = np.full(rows.shape, 0.8, dtype=np.float32)
    left_out = translations_left_out(scores, rows, langs)
    assert np.isneginf(left_out[0, :3]).all() and left_out[0, 3] == 0.8  # three translations: left out
    assert not np.isneginf(left_out[4]).any()  # row 4 has none (row 0 is its own language)
    assert MIN_TRANSLATIONS == 3 and 0.8 < NEAR_DUPLICATE_COSINE < 0.995
    # a bitext row, one translation: kept, as the plain margin keeps it
    assert (translations_left_out(scores[:2, :2], np.array([[1, 0], [0, 1]]), np.array([0, 1])) == 0.8).all()
    copy = scores.copy()
    copy[4, 0] = 0.995  # row 0 is a near-duplicate of row 4, in its language: left out all the same
    assert np.isneginf(translations_left_out(copy, rows, langs)[4]).tolist() == [True, False, False, False]


@pytest.fixture(scope="module")
def demo_neighbours():
    """The demo corpus as an index holds it: raw document vectors, language-neutral, and each row's
    TRANSLATION_DEPTH nearest other documents."""
    embedder = EmbedderSpec().create()
    try:
        raw = embedder.embed_documents([r["text"] for r in DEMO])
    finally:
        embedder.close()
    langs = [r["lang"] for r in DEMO]
    neutral = LanguageStats.fit(raw, langs).neutralize(raw, langs)
    scores, rows = exact_neighbours(neutral, TRANSLATION_DEPTH, "cpu", groups=np.arange(len(DEMO)))
    return scores, rows, np.unique(langs, return_inverse=True)[1].ravel()


def test_likely_translations_on_the_demo_are_its_translations(demo_neighbours):
    scores, rows, langs = demo_neighbours
    groups = np.array([r["group"] or f"solo:{i}" for i, r in enumerate(DEMO)], dtype=object)
    found = likely_translations(scores, rows, langs)
    right = groups[np.maximum(rows, 0)] == groups[:, None]
    # measured: 2,028 found, all of them translations; 6.3 of each grouped sentence's 7, and 3 or more for
    # 96.9% of them; none for the sentences without translations
    assert found.sum() > 1800 and (found & right).sum() / found.sum() >= 0.99
    grouped = np.array([bool(r["group"]) for r in DEMO])
    assert np.mean(found[grouped].sum(axis=1) >= MIN_TRANSLATIONS) >= 0.9
    assert (found[~grouped].sum(axis=1) < MIN_TRANSLATIONS).all()  # the solos have none to leave out
    plain = neighbourhood_means(scores[:, :4])
    parallel = scoring_neighbourhoods("parallel-margin", scores, rows, np.array([r["lang"] for r in DEMO]))
    assert np.array_equal(scoring_neighbourhoods("margin", scores[:, :4], rows[:, :4], langs), plain)
    # without its translations a grouped sentence's neighbourhood falls to a solo sentence's level
    # (measured: 0.631 against 0.225 with the plain margin, 0.249 against 0.225 here)
    assert plain[grouped].mean() > plain[~grouped].mean() + 0.2
    assert abs(parallel[grouped].mean() - parallel[~grouped].mean()) < 0.1


@pytest.mark.parametrize("query", ["weather walk", "weather"])
def test_the_default_ranks_a_weather_document_first_on_the_demo(tmp_path_factory, query):
    """Issue 18: with the plain margin, "weather walk" ranked a skiing sentence without translations
    (cosine 0.21) above weather-walk-en (0.30), and "weather" a sentence about the moon's tides first."""
    hits = {}
    for scoring in ("parallel-margin", "margin"):
        path = tmp_path_factory.getbasetemp() / f"demo-{scoring}"
        if not path.exists():
            xlsearch.Index.build([DEMO_CORPUS], path, EmbedderSpec(), settings=IndexSettings(scoring=scoring))
        hits[scoring] = xlsearch.Index.open(path).search(query, k=1)[0]
    assert IndexSettings().scoring == "parallel-margin"
    assert hits["parallel-margin"].extra["topic"] == "weather", hits["parallel-margin"]
    assert hits["margin"].extra["topic"] != "weather"  # what the default changed
