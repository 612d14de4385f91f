"""How well `find_duplicates` recovers pairs known to say the same thing: precision and recall of the
document pairs its groups imply, at its threshold and at the best threshold in hindsight; and the
Tatoeba test mix those numbers are measured on."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from engine.dedup import Duplicates, link_groups
from engine.documents import document_field
from engine.evaluation.data import load_tatoeba
from engine.store import IndexReader

SWEEP_STEPS = 200
END_PUNCTUATION = ".!?。！？…"


def group_pairs(groups: list[np.ndarray]) -> set[tuple[int, int]]:
    return {pair for members in groups for pair in combinations(sorted(members.tolist()), 2)}


def true_pairs(keys: list[str | None], langs: np.ndarray, cross_lingual_only: bool) -> set[tuple[int, int]]:
    """Pairs of documents with the same key (the cross-lingual ones only, when that is what was asked)."""
    by_key: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        if key is not None:
            by_key.setdefault(key, []).append(position)
    return {(a, b) for members in by_key.values() for a, b in combinations(members, 2)
            if not cross_lingual_only or langs[a] != langs[b]}


def pair_scores(found: set, truth: set) -> dict:
    correct = len(found & truth)
    precision = correct / len(found) if found else 1.0
    recall = correct / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "pairs_found": len(found), "pairs_true": len(truth), "pairs_correct": correct}


def evaluate_duplicates(index: IndexReader, found: Duplicates, truth_field: str, cross_lingual_only: bool = False) -> dict:
    """Pair precision/recall against a field naming what each document says, at the threshold used and
    at the threshold that would have maximised F1 (swept over the candidate margins' quantiles)."""
    documents = found.documents
    langs = index.column("lang")[documents.first_rows].astype(str)
    truth = true_pairs(document_field(index, documents, truth_field), langs, cross_lingual_only)
    best = {"f1": -1.0}
    for threshold in np.unique(np.quantile(found.pairs.margins, np.linspace(0, 1, SWEEP_STEPS + 1))):
        linked = found.pairs.subset(found.pairs.margins >= threshold)
        scores = pair_scores(group_pairs(link_groups(len(documents), linked.left, linked.right)), truth)
        if scores["f1"] > best["f1"]:
            best = {"threshold": round(float(threshold), 4), **scores}
    return {"truth_field": truth_field, "threshold": round(found.threshold, 4),
            **pair_scores(group_pairs(found.members), truth), "best_in_hindsight": best}


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
