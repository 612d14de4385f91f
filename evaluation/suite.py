"""`xlsearch eval --suite`: the ranking benchmarks the default scoring is chosen on (issue 18).

Five sets, each an index of documents that say the same thing in groups (translations, or paraphrases),
and queries whose right answers are their group's other documents:

- tatoeba: Tatoeba pooled, five pairs and their English sides in one index, each sentence asking for its
  translations (as `xlsearch eval --pairs`);
- paraphrases: corpora/paraphrases (same-language pairs) among the demo corpus, each paraphrase asking
  for its partner in its own language;
- demo: corpora/demo, 8 versions of 40 sentences and 40 sentences without translations;
- multiway: Tatoeba's English sentences that several pair files translate, with their translations
  (groups of 6 to 48 languages, English included), each asking for the others;
- paragraphs: evaluation.paragraphs (consecutive Tatoeba lines joined into paragraphs in each language
  that has them), queried by single sentences of another language's version; every PARAGRAPH_STRIDE-th
  group (embedding paragraphs is the cost).

Each set is split by group into a fit half and a held-out half (evaluation.paragraphs.is_held_out, a
checksum of the group id): the default was chosen on the fit halves, the held-out halves report it. Each
half is an index of its own: language statistics fitted on its documents, as an index fits its own, and
every scoring ranks the same 32 best candidates by cosine (as search does), then re-orders them."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlsearch.engine.ann.neighbours import exact_neighbours, exact_search
from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.errors import InputError
from xlsearch.engine.languages import normalize_lang
from xlsearch.engine.profiles import PARALLEL_TASK
from xlsearch.engine.ranking.margin import MARGIN_K
from xlsearch.engine.ranking.neighbourhoods import RERANK_DEPTH, margin_scores, neighbourhood_means
from xlsearch.engine.ranking.neutral import LanguageStats
from xlsearch.engine.ranking.translations import TRANSLATION_DEPTH, translations_left_out
from xlsearch.evaluation.data import load_tatoeba
from xlsearch.evaluation.paragraphs import build_paragraph_set, is_held_out

TATOEBA_POOL = ["cmn-eng", "jpn-eng", "kor-eng", "deu-eng", "ara-eng"]
# English sentences translated in at least this many pair files: 819 groups, 6,930 sentences (a minute
# of embedding on 2 busy cores)
MULTIWAY_MIN_LANGUAGES = 5
# Every 8th paragraph group: 538 paragraphs and as many queries (the full set's 4,297 paragraphs took
# 3 s each to embed on 2 cores shared with 4 busy processes)
PARAGRAPH_STRIDE = 8
MAP_DEPTH = 20  # mAP@20, as the issue measured it
SAME_LANGUAGE_TOP = 10
WORST_MIN_QUERIES = 20  # a direction is a candidate for the worst only with this many queries
BOOTSTRAP = 200  # resamples of the groups for the standard error
HALVES = ("fit", "held_out")


@dataclass(frozen=True)
class Item:
    text: str
    lang: str
    group: str | None  # what it says; None: a document with no counterpart (a distractor)


@dataclass
class Benchmark:
    name: str
    documents: list[Item]
    queries: list[Item] | None = None  # None: every grouped document asks for the others, itself excluded
    same_language: bool = False  # right answers in the query's own language (paraphrases), else in others

    def half(self, which: str) -> Benchmark:
        """The fit or held-out half, by group (a distractor by its text)."""
        keep = which == "held_out"

        def kept(items: list[Item]) -> list[Item]:
            return [item for item in items if is_held_out(item.group or item.text) == keep]

        return Benchmark(self.name, kept(self.documents), None if self.queries is None else kept(self.queries),
                         self.same_language)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tatoeba_pooled(tatoeba: Path) -> Benchmark:
    sentences = [s for parallel in load_tatoeba(tatoeba, TATOEBA_POOL) for s in parallel.sentences]
    return Benchmark("tatoeba", [Item(s.text, s.lang, s.key) for s in sentences])


def paraphrases(corpora: Path) -> Benchmark:
    """The paraphrase pairs among the demo corpus's documents (which never answer: their groups are other
    languages' translations, not paraphrases, and are kept apart by a prefix)."""
    pairs = [Item(r["text"], normalize_lang(r["lang"]), "paraphrase:" + r["group"])
             for r in _read_jsonl(corpora / "paraphrases" / "paraphrases.jsonl")]
    demo = [Item(r["text"], normalize_lang(r["lang"]), None) for r in _read_jsonl(corpora / "demo" / "demo.jsonl")]
    return Benchmark("paraphrases", pairs + demo, queries=pairs, same_language=True)


def demo_groups(corpora: Path) -> Benchmark:
    rows = _read_jsonl(corpora / "demo" / "demo.jsonl")
    return Benchmark("demo", [Item(r["text"], normalize_lang(r["lang"]), r.get("group") or None) for r in rows])


def multiway(tatoeba: Path) -> Benchmark:
    """Each English sentence found in MULTIWAY_MIN_LANGUAGES or more pair files, with its translations."""
    versions: dict[str, dict[str, str]] = {}
    for english_file in sorted(tatoeba.glob("tatoeba.*-eng.eng")):
        code = english_file.name.split(".")[1].split("-")[0]
        other = english_file.with_suffix(f".{code}").read_text(encoding="utf-8").splitlines()
        for english, translation in zip(english_file.read_text(encoding="utf-8").splitlines(), other):
            if english.strip() and translation.strip():
                versions.setdefault(english, {}).setdefault(normalize_lang(code), translation)
    documents = []
    for english, translations in versions.items():
        if len(translations) >= MULTIWAY_MIN_LANGUAGES:
            documents += [Item(english, "en", english)]
            documents += [Item(text, lang, english) for lang, text in sorted(translations.items())]
    return Benchmark("multiway", documents)


def paragraphs(tatoeba: Path) -> Benchmark:
    built = build_paragraph_set(tatoeba)
    groups = set(built.groups[::PARAGRAPH_STRIDE])
    return Benchmark("paragraphs", [Item(p.text, p.lang, p.group) for p in built.paragraphs if p.group in groups],
                     queries=[Item(q.text, q.lang, q.group) for q in built.queries if q.group in groups])


BENCHMARKS = {"tatoeba": tatoeba_pooled, "paraphrases": paraphrases, "demo": demo_groups, "multiway": multiway,
              "paragraphs": paragraphs}
NEEDS_TATOEBA = ("tatoeba", "multiway", "paragraphs")


def load_suite(names: str, tatoeba: Path, corpora: Path) -> list[Benchmark]:
    """The benchmarks named (a comma list, or `all`), from the Tatoeba directory and the project's corpora."""
    chosen = list(BENCHMARKS) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown or not chosen:
        raise InputError(f"expected all or some of {', '.join(BENCHMARKS)}", field="suite", value=names)
    tatoeba, corpora = Path(tatoeba), Path(corpora)
    if set(chosen) & set(NEEDS_TATOEBA) and not tatoeba.is_dir():
        raise InputError(f"{tatoeba}: no such directory (the Tatoeba test pairs)")
    return [BENCHMARKS[n](tatoeba if n in NEEDS_TATOEBA else corpora) for n in chosen]


# --- rankings: each ranks a query's candidates (cosines and rows, best first) given the index ---------

@dataclass
class IndexView:
    """One half's documents as an index holds them: language-neutral vectors, and each row's nearest rows
    of other documents as deep as any scoring needs."""

    vectors: np.ndarray
    lang_codes: np.ndarray
    neighbour_scores: np.ndarray
    neighbour_rows: np.ndarray


def _csls(cosines: np.ndarray, rows: np.ndarray, document_side: np.ndarray) -> np.ndarray:
    """CSLS (Conneau et al. 2018): 2 cos - r_query - r_document, the query's neighbourhood its k best."""
    query_side = np.mean(cosines[:, :MARGIN_K], axis=1, keepdims=True)
    return np.where(rows >= 0, 2 * cosines - query_side - document_side[np.maximum(rows, 0)], -np.inf)


Scoring = Callable[[IndexView], Callable[[np.ndarray, np.ndarray], np.ndarray]]
SCORINGS: dict[str, Scoring] = {
    # language-neutral cosine, and the query-side-only margin: dividing every candidate of a query by the
    # same number keeps their order
    "cosine": lambda view: lambda cosines, rows: cosines,
    "margin": lambda view: lambda cosines, rows: margin_scores(
        cosines, rows, neighbourhood_means(view.neighbour_scores[:, :MARGIN_K])),
    "margin k=16": lambda view: lambda cosines, rows: margin_scores(
        cosines, rows, neighbourhood_means(view.neighbour_scores[:, :16], 16)),
    "csls": lambda view: lambda cosines, rows: _csls(
        cosines, rows, neighbourhood_means(view.neighbour_scores[:, :MARGIN_K])),
    "parallel-margin": lambda view: lambda cosines, rows: margin_scores(cosines, rows, neighbourhood_means(
        translations_left_out(view.neighbour_scores[:, :TRANSLATION_DEPTH],
                              view.neighbour_rows[:, :TRANSLATION_DEPTH], view.lang_codes))),
}
NEIGHBOUR_DEPTH = max(16, TRANSLATION_DEPTH)


# --- metrics ----------------------------------------------------------------------------------------

@dataclass
class Judged:
    """One scoring's answers on one half: per (query, direction) whether the first hit was right, and
    per query its average precision and same-language share, each with the query's group."""

    first_right: list[tuple[str, str, bool]]  # (group, direction, right)
    average_precision: list[tuple[str, float]]
    same_language: list[float]

    def summary(self) -> dict:
        groups = sorted({g for g, _, _ in self.first_right} | {g for g, _ in self.average_precision})
        index = {g: i for i, g in enumerate(groups)}
        r_groups = np.array([index[g] for g, _, _ in self.first_right])
        directions, r_dirs = np.unique([d for _, d, _ in self.first_right], return_inverse=True)
        hits = np.array([right for _, _, right in self.first_right], dtype=float)
        ap_groups = np.array([index[g] for g, _ in self.average_precision])
        ap = np.array([value for _, value in self.average_precision])

        def recall(weights: np.ndarray) -> float:  # the mean over directions of each one's recall@1
            w = weights[r_groups]
            totals = np.bincount(r_dirs, w, len(directions))
            return float(np.mean(np.bincount(r_dirs, w * hits, len(directions))[totals > 0] / totals[totals > 0]))

        def mean_ap(weights: np.ndarray) -> float:
            w = weights[ap_groups]
            return float((w * ap).sum() / w.sum())

        resamples = np.random.default_rng(0).multinomial(len(groups), np.full(len(groups), 1 / len(groups)), BOOTSTRAP)
        counts = np.bincount(r_dirs, minlength=len(directions))
        per_direction = np.bincount(r_dirs, hits, len(directions)) / np.maximum(counts, 1)
        eligible = np.flatnonzero(counts >= WORST_MIN_QUERIES)
        worst = eligible[np.argmin(per_direction[eligible])] if len(eligible) else None
        ones = np.ones(len(groups))
        return {
            "recall@1": round(recall(ones), 4),
            "recall@1_se": round(float(np.std([recall(w.astype(float)) for w in resamples])), 4),
            f"map@{MAP_DEPTH}": round(mean_ap(ones), 4),
            f"map@{MAP_DEPTH}_se": round(float(np.std([mean_ap(w.astype(float)) for w in resamples])), 4),
            "worst": None if worst is None else {"direction": str(directions[worst]),
                                                  "recall@1": round(float(per_direction[worst]), 4)},
            "same_language_top10": round(float(np.mean(self.same_language)), 4),
            "queries": len(self.average_precision),
        }


def judge(ranked: np.ndarray, queries: list[Item], query_rows: np.ndarray, documents: list[Item],
          same_language: bool) -> Judged:
    """Scores ranked candidates (rows, best first, -1 where none). Right answers: the query's group in
    other languages (or, for paraphrases, in its own), documents of the same text and language counting as
    the same answer. The group's other documents (third languages, for a direction; the query's own
    version) are skipped, neither right nor wrong, as in `xlsearch eval`."""
    by_group: dict[str, list[int]] = defaultdict(list)
    by_text: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row, doc in enumerate(documents):
        by_text[(doc.text, doc.lang)].append(row)
        if doc.group is not None:
            by_group[doc.group].append(row)
    langs = np.array([doc.lang for doc in documents])
    judged = Judged([], [], [])
    for query, own_row, candidates in zip(queries, query_rows, ranked):
        members = {r for m in by_group[query.group] for r in by_text[(documents[m].text, documents[m].lang)]}
        itself = set(by_text[(query.text, query.lang)]) | {int(own_row)}
        right = {r for r in members if (langs[r] == query.lang) == same_language} - itself
        if not right:
            continue
        listed = [int(r) for r in candidates if r >= 0 and r not in itself]
        judged.same_language.append(float(np.mean(langs[listed[:SAME_LANGUAGE_TOP]] == query.lang)))
        scored = [r for r in listed if r in right or r not in members]
        hits = np.array([r in right for r in scored[:MAP_DEPTH]], dtype=float)
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        judged.average_precision.append((query.group, float((precision * hits).sum() / min(len(right), MAP_DEPTH))))
        for lang in sorted({langs[r] for r in right}):
            direction = [r for r in listed if r not in members or (r in right and langs[r] == lang)]
            judged.first_right.append((query.group, f"{query.lang}->{lang}",
                                       bool(direction) and direction[0] in right))
    return judged


# --- running ----------------------------------------------------------------------------------------

def _embedded(embedder: Embedder, benchmark: Benchmark, progress: Callable[[int], None] | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(document vectors, query vectors): sentences symmetric (both sides as queries of the parallel task,
    as `xlsearch eval`), paragraphs as documents queried by sentences (as search)."""
    def embed(texts: list[str], documents: bool) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), 64):
            batch = texts[start:start + 64]
            parts.append(embedder.embed_documents(batch) if documents else embedder.embed_queries(batch, task=PARALLEL_TASK))
            if progress:
                progress(len(batch))
        return np.vstack(parts).astype(np.float32) if parts else np.zeros((0, embedder.dim), np.float32)

    if benchmark.queries is None or benchmark.same_language:
        vectors = embed([d.text for d in benchmark.documents], documents=False)
        return vectors, vectors
    documents = embed([d.text for d in benchmark.documents], documents=True)
    parts = []
    for start in range(0, len(benchmark.queries), 64):
        batch = [q.text for q in benchmark.queries[start:start + 64]]
        parts.append(embedder.embed_queries(batch))
        if progress:
            progress(len(batch))
    return documents, np.vstack(parts).astype(np.float32)


def run_half(benchmark: Benchmark, documents: np.ndarray, queries: np.ndarray,
             scorings: dict[str, Scoring] = SCORINGS) -> dict[str, dict]:
    """Every scoring's summary on one half, embedded: `queries` are the documents' own vectors when the
    benchmark's queries are its documents."""
    langs = [d.lang for d in benchmark.documents]
    stats = LanguageStats.fit(documents, langs)
    neutral = documents if stats is None else stats.neutralize(documents, langs)
    if benchmark.queries is None:
        asking = [i for i, d in enumerate(benchmark.documents) if d.group is not None]
        query_items, query_rows = [benchmark.documents[i] for i in asking], np.array(asking)
        query_vectors = neutral[query_rows]
    elif benchmark.same_language:  # the queries are documents too: the first of them
        query_items, query_rows = benchmark.queries, np.arange(len(benchmark.queries))
        query_vectors = neutral[query_rows]
    else:
        query_items, query_rows = benchmark.queries, np.full(len(benchmark.queries), -1)
        query_vectors = queries if stats is None else stats.neutralize(queries, stats.detect(queries))
    groups = np.array([d.group if d.group is not None else f"\0{i}" for i, d in enumerate(benchmark.documents)], dtype=object)
    scores, rows = exact_neighbours(neutral, NEIGHBOUR_DEPTH, "cpu", groups=np.arange(len(groups)))
    view = IndexView(neutral, np.unique(langs, return_inverse=True)[1].ravel(), scores, rows)
    cosines, candidates = exact_search(query_vectors, neutral, RERANK_DEPTH + 1)
    # a query that is a document of the index finds itself first: it is left out, as pooled eval does
    itself = candidates == query_rows[:, None]
    cosines = np.where(itself, -np.inf, cosines)
    order = np.argsort(-cosines, axis=1, kind="stable")[:, :RERANK_DEPTH]
    cosines, candidates = np.take_along_axis(cosines, order, axis=1), np.take_along_axis(candidates, order, axis=1)
    candidates = np.where(np.isfinite(cosines), candidates, -1)
    results = {}
    for name, scoring in scorings.items():
        ranked_scores = scoring(view)(cosines, candidates)
        ranking = np.argsort(-ranked_scores, axis=1, kind="stable")
        ranked = np.take_along_axis(candidates, ranking, axis=1)
        results[name] = judge(ranked, query_items, query_rows, benchmark.documents, benchmark.same_language).summary()
    return results


def run_suite(embedder: Embedder, benchmarks: list[Benchmark], progress: Callable[[int, int], None] | None = None,
              scorings: dict[str, Scoring] = SCORINGS) -> dict:
    """{benchmark: {half: {scoring: summary}}} and the sizes, every set embedded once (through the
    embedder's cache)."""
    total = sum(len(b.documents) + (len(b.queries) if b.queries is not None and not b.same_language else 0)
                for b in benchmarks)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    report: dict = {"model": embedder.model, "benchmarks": {}}
    for benchmark in benchmarks:
        documents, queries = _embedded(embedder, benchmark, advance)
        entry = {}
        for which in HALVES:
            half = benchmark.half(which)
            keep_docs = np.array([is_held_out(d.group or d.text) == (which == "held_out") for d in benchmark.documents])
            half_queries = queries
            if benchmark.queries is not None and not benchmark.same_language:
                keep_queries = np.array([is_held_out(q.group) == (which == "held_out") for q in benchmark.queries])
                half_queries = queries[keep_queries]
            entry[which] = {"documents": len(half.documents),
                            "scorings": run_half(half, documents[keep_docs], half_queries, scorings)}
        report["benchmarks"][benchmark.name] = entry
    return report
