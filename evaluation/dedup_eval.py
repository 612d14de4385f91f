"""How well `find_duplicates` recovers pairs known to say the same thing: precision and recall of the
document pairs its groups imply, at its threshold and at the best threshold in hindsight; and the
Tatoeba test mix those numbers are measured on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from xlsearch.engine.apps.dedup import Duplicates, link_groups
from xlsearch.engine.apps.documents import document_field
from xlsearch.evaluation.data import load_tatoeba
from xlsearch.engine.store.reader import IndexReader

SWEEP_STEPS = 200
END_PUNCTUATION = ".!?。！？…"


def count_pairs(labels: list) -> int:
    """Pairs of items with equal labels (None never pairs)."""
    return sum(n * (n - 1) // 2 for label, n in Counter(labels).items() if label is not None)


class PairCounter:
    """Counts, for a set of groups, the document pairs they imply and how many of those share a key,
    without listing the pairs (a low threshold chains hundreds of documents into one group). With
    `cross_lingual_only`, pairs within one language are not counted."""

    def __init__(self, keys: list[str | None], langs: np.ndarray, cross_lingual_only: bool) -> None:
        self.keys, self.langs, self.cross_lingual_only = keys, langs.tolist(), cross_lingual_only

    def _pairs(self, members: list[int], keyed: bool) -> int:
        labels = [self.keys[m] if keyed else 0 for m in members]
        same_language = count_pairs([(label, self.langs[m]) if label is not None else None
                                     for label, m in zip(labels, members)]) if self.cross_lingual_only else 0
        return count_pairs(labels) - same_language

    def truth(self) -> int:
        return self._pairs(list(range(len(self.keys))), keyed=True)

    def scores(self, groups: list[np.ndarray]) -> dict:
        found = sum(self._pairs(g.tolist(), keyed=False) for g in groups)
        correct = sum(self._pairs(g.tolist(), keyed=True) for g in groups)
        truth = self.truth()
        precision = correct / found if found else 1.0
        recall = correct / truth if truth else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                "pairs_found": found, "pairs_true": truth, "pairs_correct": correct}


def evaluate_duplicates(index: IndexReader, found: Duplicates, truth_field: str, cross_lingual_only: bool = False) -> dict:
    """Pair precision/recall against a field naming what each document says, at the threshold used and
    at the threshold that would have maximised F1 (swept over the candidate margins' quantiles)."""
    documents = found.documents
    langs = index.column("lang")[documents.first_rows].astype(str)
    counter = PairCounter(document_field(index, documents, truth_field), langs, cross_lingual_only)
    best = {"f1": -1.0}
    for threshold in np.unique(np.quantile(found.pairs.margins, np.linspace(0, 1, SWEEP_STEPS + 1))):
        linked = found.pairs.subset(found.pairs.margins >= threshold)
        scores = counter.scores(link_groups(len(documents), linked.left, linked.right))
        if scores["f1"] > best["f1"]:
            best = {"threshold": round(float(threshold), 4), **scores}
    return {"truth_field": truth_field, "threshold": round(found.threshold, 4), **counter.scores(found.members),
            "best_in_hindsight": best}


def near_copy(text: str) -> str:
    """A light edit that keeps the meaning: the final punctuation dropped (or added), and the first
    letter's case swapped where the script has case."""
    stripped = text.rstrip(END_PUNCTUATION)
    edited = stripped if stripped != text else text + "!"
    return edited[:1].swapcase() + edited[1:]


def tatoeba_dedup_mix(directory: Path, pair: str = "cmn-eng", lines: int = 1000, copies: int = 40) -> list[dict]:
    """Records for a duplicate-detection test from the first `lines` Tatoeba lines: the English side of
    their first two thirds and the other side of their last two thirds, so half of each side has its
    translation in the mix and half has none; plus `copies` injected duplicates from both sides,
    alternately exact and near (`near_copy`). `meaning` is the truth: the Tatoeba line, merged with any
    other line that shares a sentence with it."""
    sentences = load_tatoeba(Path(directory), [pair])[0].sentences
    source_lang, english = sentences[0].lang, sentences[1].lang
    texts = [(sentences[i + 1].text, sentences[i].text) for i in range(0, len(sentences), 2)][:lines]
    meaning = _meanings(texts)
    third = len(texts) // 3
    records = [{"id": f"{english}-{i}", "lang": english, "text": texts[i][0], "meaning": meaning[i]}
               for i in range(len(texts) - third)]
    records += [{"id": f"{source_lang}-{i}", "lang": source_lang, "text": texts[i][1], "meaning": meaning[i]}
                for i in range(third, len(texts))]
    step = max(1, len(records) // max(copies, 1))
    for n, original in enumerate(records[::step][:copies]):
        exact = n % 2 == 0
        records.append({**original, "id": f"{original['id']}-{'copy' if exact else 'near'}",
                        "text": original["text"] if exact else near_copy(original["text"])})
    return records


def write_tatoeba_mix(directory: Path, pair: str, out: Path, lines: int = 1000, copies: int = 40) -> Path:
    """`tatoeba_dedup_mix` as a JSONL corpus for `xlsearch index` (then `xlsearch dedup --truth-field meaning`)."""
    with open(out, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in tatoeba_dedup_mix(directory, pair, lines, copies))
    return Path(out)


def _meanings(texts: list[tuple[str, str]]) -> list[str]:
    """One key per line; lines that repeat an English or a translated sentence share the key."""
    first_seen: dict[tuple[int, str], int] = {}
    left, right = [], []
    for line, pair in enumerate(texts):
        for side, text in enumerate(pair):
            earlier = first_seen.setdefault((side, text.strip()), line)
            if earlier != line:
                left.append(earlier)
                right.append(line)
    key = np.arange(len(texts))
    for members in link_groups(len(texts), np.array(left, dtype=np.int64), np.array(right, dtype=np.int64)):
        key[members] = members[0]
    return [f"line-{k}" for k in key]
