"""`xlsearch eval`: embed parallel sentences once, then score every (method, scoring) configuration."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faiss
import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import InputError
from xlsearch.evaluation.data import ParallelSet, Sentence
from xlsearch.engine.ranking.margin import MARGIN_K, neighbourhood, ratio_margin
from xlsearch.evaluation.metrics import KS, DirectionScores, direction_scores, first_right_rank
from xlsearch.engine.ranking.neutral import METHOD, LanguageStats
from xlsearch.engine.profiles import PARALLEL_TASK

if TYPE_CHECKING:
    from xlsearch.engine.rerank.stage import Reranker

# monolingual: one pool of every language, but each query's answer is its paraphrase in its own language
MODES = ("pairwise", "pooled", "monolingual")
METHODS = ("plain", "neutral")
SCORINGS = ("cosine", "margin")
DEPTH = 32  # candidates ranked per query: recall@10 and MRR are computed within these


@dataclass
class Split:
    """Deterministic held-out split per parallel set: fit on its first keys, score on its last ones."""

    fit: int | None = None  # keys per set to fit on; default half
    score: int | None = None  # keys per set to score; default all the rest

    def apply(self, parallel: ParallelSet) -> tuple[list[Sentence], list[Sentence], dict]:
        keys = parallel.keys
        fit = len(keys) // 2 if self.fit is None else self.fit
        score = len(keys) - fit if self.score is None else self.score
        if fit + score > len(keys) or score <= 0:
            raise InputError(f"{parallel.name}: `fit` {fit} + `score` {score} exceeds its {len(keys)} parallel items")
        fit_keys, score_keys = set(keys[:fit]), set(keys[len(keys) - score:])
        return (
            [s for s in parallel.sentences if s.key in fit_keys],
            [s for s in parallel.sentences if s.key in score_keys],
            {"set": parallel.name, "items": len(keys), "fit": f"first {fit}", "score": f"last {score}"},
        )


@dataclass
class Configuration:
    method: str
    scoring: str
    directions: dict[str, DirectionScores] = field(default_factory=dict)
    reranked: bool = False  # the first stage's best candidates ordered by a reranker

    @property
    def name(self) -> str:
        return f"{self.method}+{self.scoring}" + ("+rerank" if self.reranked else "")

    def summary(self) -> dict:
        recall1 = {d: s.recall[1] for d, s in self.directions.items()}
        worst = min(recall1, key=recall1.get)
        shares = [s.same_language_top10 for d, s in self.directions.items()
                  if s.same_language_top10 is not None and not d.startswith("en->")]
        return {
            "average": {**{f"recall@{k}": round(float(np.mean([s.recall[k] for s in self.directions.values()])), 4) for k in KS},
                        "mrr": round(float(np.mean([s.mrr for s in self.directions.values()])), 4)},
            "worst": {"direction": worst, "recall@1": round(recall1[worst], 4)},
            "same_language_top10_non_english": round(float(np.mean(shares)), 4) if shares else None,
        }

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "scoring": self.scoring, "reranked": self.reranked,
                **self.summary(),
                "directions": {d: s.to_dict() for d, s in self.directions.items()}}


@dataclass
class Report:
    mode: str
    model: str
    split: list[dict]
    configurations: list[Configuration]
    language_detection_accuracy: float | None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "model": self.model, "split": self.split,
                "neutral_method": METHOD, "language_detection_accuracy": self.language_detection_accuracy,
                "configurations": [c.to_dict() for c in self.configurations]}


def _ranked(queries: np.ndarray, candidates: np.ndarray, margin: bool, same_pool: bool) -> np.ndarray:
    """Candidate rows per query, best first, DEPTH deep; by cosine or by ratio margin (LASER's
    mine_bitexts: margin computed on the cosine top candidates)."""
    extra = 1 if same_pool else 0  # the query itself comes back first and is dropped
    depth = min(DEPTH, len(candidates) - extra)
    forward = faiss.IndexFlatIP(candidates.shape[1])
    forward.add(candidates)
    scores, rows = forward.search(queries, depth + extra)
    if same_pool:  # a sentence is never its own answer
        keep = rows != np.arange(len(queries))[:, None]
        rows = np.vstack([r[k][:depth] for r, k in zip(rows, keep)])
        scores = np.vstack([s[k][:depth] for s, k in zip(scores, keep)])
    if not margin:
        return rows
    query_side = neighbourhood(scores)
    if same_pool:
        candidate_side = query_side
    else:
        backward = faiss.IndexFlatIP(queries.shape[1])
        backward.add(queries)
        candidate_side = neighbourhood(backward.search(candidates, min(MARGIN_K, len(queries)))[0])
    margins = ratio_margin(scores, query_side, candidate_side[rows])
    order = np.argsort(-margins, axis=1, kind="stable")
    return np.take_along_axis(rows, order, axis=1)


def _score_block(
    queries: list[Sentence], candidates: list[Sentence], q_vecs: np.ndarray, c_vecs: np.ndarray,
    margin: bool, same_pool: bool, into: dict[str, DirectionScores], monolingual: bool = False,
    rerank: Callable[[list[Sentence], list[Sentence], np.ndarray], np.ndarray] | None = None,
) -> None:
    """All directions whose queries are `queries` and whose answers are among `candidates`; with
    `monolingual`, only the direction from each query's language to itself; with `rerank`, the candidate
    rows as it re-orders them."""
    ranked = _ranked(q_vecs, c_vecs, margin, same_pool)
    if rerank is not None:
        ranked = rerank(queries, candidates, ranked)
    by_key: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # key -> lang -> rows
    by_text_lang: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, c in enumerate(candidates):
        by_key[c.key][c.lang].append(j)
        by_text_lang[(c.text, c.lang)].append(j)
    c_langs = np.array([c.lang for c in candidates])
    ranks: dict[str, list[int]] = defaultdict(list)
    same_language: dict[str, list[float]] = defaultdict(list)
    for i, q in enumerate(queries):
        translations = by_key.get(q.key, {})
        for lang in [q.lang] if monolingual else sorted(set(translations) - {q.lang}):
            # identical texts count as the same answer (LASER's text-level xsim)
            right = {j for t in translations.get(lang, []) for j in by_text_lang[(candidates[t].text, lang)]} - {i if same_pool else -1}
            if not right:
                continue
            # in multi-way data the query's translations into third languages are right too, just not
            # for this direction: they are skipped, neither right nor wrong
            others = {j for other, rows in translations.items() if other not in (q.lang, lang) for j in rows}
            row = [j for j in ranked[i] if j not in others]
            direction = f"{q.lang}->{lang}"
            ranks[direction].append(int(first_right_rank(np.array([row]), [np.array(sorted(right))])[0]))
            if same_pool:
                same_language[direction].append(float(np.mean(c_langs[ranked[i][:10]] == q.lang)))
    for direction, values in ranks.items():
        into[direction] = direction_scores(np.array(values), np.array(same_language[direction]) if same_pool else None)


def evaluate(
    embedder: Embedder,
    sets: list[ParallelSet],
    mode: str = "pooled",
    methods: tuple[str, ...] = METHODS,
    scorings: tuple[str, ...] = SCORINGS,
    split: Split = Split(),
    progress: Callable[[int, int], None] | None = None,
    fit_from: list[ParallelSet] | None = None,
    task: str = PARALLEL_TASK,
    reranker: Reranker | None = None,
) -> Report:
    """Scores `sets` under each method and scoring. Language statistics come from each set's first
    `split.fit` items, or, with `fit_from`, from other data altogether (then every item is scored). Both
    sides are embedded as queries of `task`. With `reranker`, each configuration is scored again with its
    candidates re-ordered by it (`+rerank`)."""
    if mode not in MODES:
        raise InputError(f"expected one of {', '.join(MODES)}", field="mode", value=mode)
    for value, allowed, name in ((methods, METHODS, "method"), (scorings, SCORINGS, "scoring")):
        unknown = set(value) - set(allowed)
        if unknown or not value:
            raise InputError(f"expected some of {', '.join(allowed)}", field=name, value=",".join(value))
    if fit_from is not None:
        if split.fit:
            raise InputError("`fit` and `fit_from` exclude each other: statistics come from one or the other")
        split = Split(fit=0, score=split.score)
    parts = [split.apply(s) for s in sets]
    fit_sentences = [s for fit, _, _ in parts for s in fit]
    if fit_from is not None:
        fit_sentences = [s for parallel in fit_from for s in parallel.sentences]
        for _, _, info in parts:
            info["fit"] = "from " + ", ".join(p.name for p in fit_from)
    score_sets = [score for _, score, _ in parts]
    texts = list(dict.fromkeys(s.text for s in fit_sentences + [s for score in score_sets for s in score]))
    vectors = {}
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        vectors.update(zip(batch, embedder.embed_queries(batch, task=task)))
        if progress:
            progress(min(start + 256, len(texts)), len(texts))

    def matrix(sentences: list[Sentence]) -> np.ndarray:
        return np.vstack([vectors[s.text] for s in sentences]).astype(np.float32)

    stats = LanguageStats.fit(matrix(fit_sentences), [s.lang for s in fit_sentences]) if fit_sentences else None
    if "neutral" in methods and stats is None:
        raise InputError("neutral ranking needs held-out sentences of two or more languages to fit on (`fit`)")
    blocks = _blocks(score_sets, mode)
    configurations = []
    rerank = _reranking(reranker, task) if reranker is not None else None
    for method in methods:
        for scoring in scorings:
            for reranked in (False, True) if rerank else (False,):
                config = Configuration(method, scoring, reranked=reranked)
                for queries, candidates, same_pool in blocks:
                    q_vecs, c_vecs = matrix(queries), matrix(candidates)
                    if method == "neutral":
                        q_vecs = stats.neutralize(q_vecs, [s.lang for s in queries])
                        c_vecs = q_vecs if same_pool else stats.neutralize(c_vecs, [s.lang for s in candidates])
                    _score_block(queries, candidates, q_vecs, c_vecs, scoring == "margin", same_pool, config.directions,
                                 monolingual=mode == "monolingual", rerank=rerank if reranked else None)
                configurations.append(config)
    scored = [s for score in score_sets for s in score]
    accuracy = None
    if stats is not None:
        detected = stats.detect(matrix(scored))
        accuracy = round(float(np.mean([d == s.lang for d, s in zip(detected, scored)])), 4)
    return Report(mode, embedder.model, [info for _, _, info in parts], configurations, accuracy)


def _reranking(reranker: Reranker, task: str) -> Callable[[list[Sentence], list[Sentence], np.ndarray], np.ndarray]:
    """Candidate rows re-ordered by `reranker`: each query's first `depth` of them (DEPTH at most, the
    depth every configuration is scored within), instructed with `task`; unchanged when an optional
    reranker fails."""
    def rerank(queries: list[Sentence], candidates: list[Sentence], ranked: np.ndarray) -> np.ndarray:
        depth = min(reranker.depth, ranked.shape[1])
        heads = ranked[:, :depth]
        scores = reranker.scores([q.text for q in queries], [[candidates[j].text for j in row] for row in heads], task)
        if scores is None:
            return ranked
        order = np.argsort(-np.asarray(scores), axis=1, kind="stable")
        return np.hstack([np.take_along_axis(heads, order, axis=1), ranked[:, depth:]])

    return rerank


def _blocks(score_sets: list[list[Sentence]], mode: str) -> list[tuple[list[Sentence], list[Sentence], bool]]:
    """(queries, candidates, same pool) blocks: one pool of everything, or each language pair of each set."""
    if mode in ("pooled", "monolingual"):
        pool = [s for score in score_sets for s in score]
        return [(pool, pool, True)]
    blocks = []
    for sentences in score_sets:
        langs = sorted({s.lang for s in sentences})
        for i, a in enumerate(langs):
            for b in langs[i + 1:]:
                side_a = [s for s in sentences if s.lang == a]
                side_b = [s for s in sentences if s.lang == b]
                blocks += [(side_a, side_b, False), (side_b, side_a, False)]
    return blocks


def recall_matrix(config: Configuration) -> tuple[list[str], np.ndarray]:
    """Languages and a query-language x answer-language recall@1 matrix (NaN where no direction)."""
    pairs = [name.split("->") for name in config.directions]
    langs = sorted({lang for pair in pairs for lang in pair})
    grid = np.full((len(langs), len(langs)), np.nan)
    for (a, b), scores in zip(pairs, config.directions.values()):
        grid[langs.index(a), langs.index(b)] = scores.recall[1]
    return langs, grid
