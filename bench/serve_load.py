"""`xlsearch serve` under load: 1, 16 and 64 concurrent clients, every query distinct (Tatoeba sentences
of 8 languages, embedded by the real model: the server runs without the embedding cache), with and
without a new version published every 2 s under them. p50/p99 latency and throughput per level, and
every answer checked: status 200 and hits all from the version its X-Index-Version names (no failed, no
mixed-version answers). The clients are threads of this process, on the same cores as the server: the
numbers are the pair's, as on a small machine. Run by `python -m bench --only serve_load`."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench import TATOEBA
from testkit.indexes import publish_copy, write_jsonl
from testkit.servers import started
from xlsearch import Index

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "corpora" / "demo" / "demo.jsonl"
QUERY_LANGUAGES = ("cmn", "jpn", "kor", "deu", "fra", "spa", "rus", "eng")
PUBLISH_EVERY_S = 2.0



def ask(base: str, query: str) -> tuple[float, int, str | None, set[str]]:
    started_at = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{base}/search?{urllib.parse.urlencode({'q': query, 'k': 10})}", timeout=120) as answer:
            body, status, version = json.loads(answer.read()), answer.status, answer.headers.get("x-index-version")
    except urllib.error.HTTPError as error:
        body, status, version = {}, error.code, None
    except OSError:
        body, status, version = {}, 0, None
    return time.perf_counter() - started_at, status, version, {hit["id"] for hit in body.get("hits", [])}


def distinct_queries() -> list[str]:
    """Tatoeba's sentences of 8 languages, interleaved (8,000 when the data is there), else the demo's 360."""
    files = [TATOEBA / f"tatoeba.{lang}-eng.{lang}" for lang in QUERY_LANGUAGES[:-1]] + [TATOEBA / "tatoeba.jpn-eng.eng"]
    if not all(f.is_file() for f in files):
        return [json.loads(line)["text"] for line in DEMO.read_text(encoding="utf-8").splitlines()]
    columns = [f.read_text(encoding="utf-8").splitlines() for f in files]
    return list(dict.fromkeys(line for row in zip(*columns) for line in row if line.strip()))


def run(levels: tuple[int, ...] = (1, 16, 64), requests: int = 400) -> list[dict]:
    rows = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()]
    queries = itertools.cycle(distinct_queries())  # each asked once in a whole run on Tatoeba
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        versions, ids = {}, {}
        for name, part in (("A", rows[:240]), ("B", rows[120:])):  # overlapping, of different sizes
            Index.build([write_jsonl(root / f"{name}.jsonl", part)], root / name)
            versions[Index.open(root / name).reader.version] = root / name
            ids[Index.open(root / name).reader.version] = {r["id"] for r in part}
        path = root / "served"
        shutil.copytree(next(iter(versions.values())), path)
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "xlsearch", "serve", "--index", str(path), "--port", str(port), "--no-cache"]
        results = []
        with started(command, cwd=ROOT) as (base, _process):
            ask(base, "warm up")
            for publishing in (False, True):
                for level in levels:
                    asked = [next(queries) for _ in range(requests)]
                    results.append(_level(base, asked, level, publishing, path, versions, ids))
                    print(results[-1], flush=True)
    single = {r["publishing"]: r["throughput_per_s"] for r in results if r["clients"] == 1}
    for r in results:
        r["throughput_vs_one"] = round(r["throughput_per_s"] / single[r["publishing"]], 2)
    return results


def _level(base: str, asked: list[str], level: int, publishing: bool, path: Path, versions: dict[str, Path],
           ids: dict[str, set[str]]) -> dict:
    total = len(asked)
    stop = threading.Event()
    publishes = []

    def publisher() -> None:
        order = list(versions.values())
        while not stop.wait(PUBLISH_EVERY_S):
            publish_copy(order[(len(publishes) + 1) % 2], path)  # B, A, B...: the server starts on A
            publishes.append(1)

    thread = threading.Thread(target=publisher) if publishing else None
    if thread:
        thread.start()
    started_at = time.perf_counter()
    with ThreadPoolExecutor(max_workers=level) as pool:
        answers = list(pool.map(lambda q: ask(base, q), asked))
    wall = time.perf_counter() - started_at
    stop.set()
    if thread:
        thread.join()
    latencies = np.array([a[0] for a in answers]) * 1000
    failed = sum(1 for a in answers if a[1] != 200)
    mixed = sum(1 for a in answers if a[1] == 200 and not a[3] <= ids.get(a[2], set()))
    return {"clients": level, "publishing": publishing, "requests": total, "publishes": len(publishes),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "throughput_per_s": round(total / wall, 1), "failed": failed, "mixed": mixed}
