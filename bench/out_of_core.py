"""`python -m bench.out_of_core --rows N --max-memory SIZE`: `xlsearch index --embeddings` over the memory
budget, built shard by shard into an inverted file on disk (engine.store.out_of_core), with the default
scoring, so every row's margin neighbourhood is computed (`--scoring cosine`: none are).

- Shards: Parquet files of `--shard-rows` vectors drawn from the mixture fitted to real embeddings
  (bench.realistic_vectors), given bench.append's 8 languages (so language statistics
  are fitted), written once and kept in `--work` for later runs.
- The build runs in a child process, as the command runs it; its peak resident memory is the child's
  (wait4), its stages timed from the progress it reports: reading the shards, training and adding,
  neighbourhoods. It tells stderr as each stage starts, and every 2% of the neighbourhoods, with the
  seconds so far and its peak RSS so far: a run stopped early still shows the rate of its last stage.
- recall@10 of 1,000 fresh queries against exact search over every row (a segment at a time).
- Cold query: a fresh process imports the reader, opens the index and answers one query vector, timed
  from its first line (not Python's start), p50 over 15 processes, each with another query.
- With `--scoring cosine --time-neighbourhoods N` (a corpus whose neighbourhood step would take hours):
  the default scoring's neighbourhood search of the built index's first N segments, timed in this
  process as the build runs it (engine.store.out_of_core.segment_neighbours), and the whole step
  estimated from its rate.
- With `--append`, 1% more rows appended (rewrite_index, as `index --append` adds them) and the same
  rows built again from scratch: the speed-up, and the appended index's neighbourhoods and recall
  against the rebuilt one's (bench.append's tolerances)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import RESULTS, stage_seconds
from bench.append import NEIGHBOURHOOD_TOLERANCE, metadata, with_languages
from bench.realistic_vectors import SHIPPED_MIXTURE, FittedMixture
from xlsearch.engine.ranking.translations import PARALLEL_MARGIN

QUERIES = 1_000
COLD_RUNS = 15
LANGUAGES_SEED = 1000  # every shard's languages share their means and directions
APPENDED = 0.01


def write_shards(directory: Path, rows: int, shard_rows: int) -> Path:
    """`rows` vectors in shards of `shard_rows` under `directory`, unless a previous run wrote them."""
    done = directory / "complete.json"
    if done.exists() and json.loads(done.read_text()) == {"rows": rows, "shard_rows": shard_rows}:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.parquet"):
        stale.unlink()
    mixture = FittedMixture.load(SHIPPED_MIXTURE, seed=0)
    rng = np.random.default_rng(0)
    for number, first in enumerate(range(0, rows, shard_rows)):
        count = min(shard_rows, rows - first)
        vectors, langs = with_languages(mixture.draw(count), rng, LANGUAGES_SEED)
        meta = metadata(langs, first)
        pq.write_table(pa.table({"id": meta.column("doc_id"), "text": meta.column("text"), "lang": meta.column("lang"),
                                 "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}),
                       directory / f"shard-{number:05d}.parquet")
    done.write_text(json.dumps({"rows": rows, "shard_rows": shard_rows}))
    return directory


def build(shards: Path, index: Path, budget: str, scoring: str = PARALLEL_MARGIN) -> dict:
    """The build in a child process: seconds per stage, in all, and the child's peak RSS."""
    child = subprocess.Popen([sys.executable, "-m", "bench.out_of_core", "--child-build", str(shards), str(index), budget,
                              scoring], stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"the build failed ({child.returncode})")
    return {**json.loads(output), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def child_build(shards: Path, index: Path, budget: str, scoring: str) -> None:
    from xlsearch.engine.ann.index_types import parse_bytes
    from xlsearch.engine.store.settings import IndexSettings
    from xlsearch.index import Index

    marks: dict[str, list[float]] = {}
    started = time.perf_counter()

    peaks: dict[str, int] = {}
    reported: dict[str, int] = {}

    def progress(done: int, total: int, stage: str) -> None:
        elapsed = time.perf_counter() - started
        told = stage not in marks or (stage == "neighbourhoods" and done * 50 // total > reported[stage] * 50 // total)
        marks.setdefault(stage, [elapsed])[1:] = [elapsed]
        reported[stage] = done
        if stage not in peaks:  # the peak so far as each stage starts: which stage raised it
            peaks[stage] = peak_rss_mb()
        if told:
            print(f"{elapsed:.0f} s: {stage} {done}/{total}, peak RSS so far {peak_rss_mb()} MB", file=sys.stderr, flush=True)

    plans = []
    Index.from_embeddings(shards, index, settings=IndexSettings(max_memory=parse_bytes(budget), scoring=scoring),
                          progress=progress, on_plan=plans.append)
    total = time.perf_counter() - started
    ends = {stage: times[-1] for stage, times in marks.items()}
    stages = stage_seconds(ends)
    stages["manifest and publish"] = round(total - max(ends.values(), default=0.0), 1)
    print(json.dumps({"plan": plans[0].describe(), "seconds": round(total, 1), "stages": stages,
                      "peak_rss_mb_when_started": peaks}))


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # as bench.index_worker reads it


def recall_at_10(index_dir: Path, queries: np.ndarray, langs: np.ndarray) -> float:
    from xlsearch.engine.store.reader import IndexReader

    index = IndexReader(index_dir)
    neutral = queries if index.language_stats is None else index.language_stats.neutralize(queries, langs)
    found = index.search(neutral, 10)[1]
    heap = faiss.ResultHeap(len(queries), 10, keep_max=True)
    for start in range(0, len(index), 200_000):
        rows = np.arange(start, min(start + 200_000, len(index)))
        scores, near = faiss.knn(neutral, index.vectors(rows), 10, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, near + start)
    heap.finalize()
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, heap.I)]))


COLD = """
import sys, time, numpy as np
started = time.perf_counter()
from xlsearch.engine.store.reader import IndexReader
index = IndexReader(sys.argv[1])
query = np.load(sys.argv[2])[int(sys.argv[3])][None, :]
index.search(query if index.language_stats is None else index.language_stats.neutralize(query, [sys.argv[4]]), 10)
print(time.perf_counter() - started)
"""


def cold_query_ms(index: Path, queries: np.ndarray, langs: np.ndarray, work: Path) -> float:
    np.save(work / "queries.npy", queries)
    times = [float(subprocess.run([sys.executable, "-c", COLD, str(index), str(work / "queries.npy"), str(i), langs[i]],
                                  capture_output=True, text=True, check=True).stdout) for i in range(COLD_RUNS)]
    return round(statistics.median(times) * 1000, 1)


def append_check(index: Path, rows: int, work: Path, max_memory: str, scoring: str, queries: np.ndarray,
                 langs: np.ndarray) -> dict:
    """1% appended to the index built, against the same rows built at once: the speed-up, neighbourhoods and
    recall@10 of `queries` (issue 16's tolerances: 0.002 for 99% of rows, recall within 0.01)."""
    from bench.append import append
    from xlsearch.engine.ann.index_types import parse_bytes
    from xlsearch.engine.store.reader import IndexReader
    from xlsearch.engine.store.settings import IndexSettings

    added = max(1, int(rows * APPENDED))
    vectors, added_langs = with_languages(FittedMixture.load(SHIPPED_MIXTURE, seed=5).draw(added), np.random.default_rng(5),
                                          LANGUAGES_SEED)
    settings = IndexSettings(max_memory=parse_bytes(max_memory), scoring=scoring)
    append_s = append(index, vectors, added_langs, rows, settings)
    appended = IndexReader(index)
    assert len(appended.manifest.segments) > 1 and appended.manifest.index.get("on_disk"), "not appended on disk"
    extra = work / "appended-shards"
    extra.mkdir(exist_ok=True)
    meta = metadata(added_langs, rows)
    pq.write_table(pa.table({"id": meta.column("doc_id"), "text": meta.column("text"), "lang": meta.column("lang"),
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}),
                   extra / "shard-99999.parquet")
    both = work / "both"
    both.mkdir(exist_ok=True)
    for shard in [*sorted((work / "shards").glob("*.parquet")), extra / "shard-99999.parquet"]:
        if not (both / shard.name).exists():
            os.link(shard, both / shard.name)
    shutil.rmtree(work / "rebuilt", ignore_errors=True)
    rebuilt = build(both, work / "rebuilt", max_memory, scoring)
    gap = np.abs(IndexReader(index).neighbourhoods - IndexReader(work / "rebuilt").neighbourhoods)
    return {"appended": added, "append_s": round(append_s, 1), "rebuild_s": rebuilt["seconds"],
            "speedup": round(rebuilt["seconds"] / append_s, 1),
            "neighbourhoods_within_0.002": round(float((gap <= NEIGHBOURHOOD_TOLERANCE).mean()), 4),
            "recall@10_appended": round(recall_at_10(index, queries, langs), 4),
            "recall@10_rebuilt": round(recall_at_10(work / "rebuilt", queries, langs), 4)}


def neighbourhood_rate(index_dir: Path, segments: int, max_memory: str) -> dict:
    """The default scoring's neighbourhood search of the first `segments` segments of an index, timed, in
    the batches the build would search them in under `max_memory`."""
    from xlsearch.engine.ann.index_types import parse_bytes
    from xlsearch.engine.ranking.neighbourhoods import neighbour_depth
    from xlsearch.engine.store.out_of_core import NeighbourJob, neighbour_batch, segment_neighbours
    from xlsearch.engine.store.reader import IndexReader

    reader = IndexReader(index_dir)
    doc_codes = np.unique(reader.row_column("doc_id"), return_inverse=True)[1].ravel()
    params, depth = reader.neighbourhood_params, neighbour_depth(PARALLEL_MARGIN)
    batch = neighbour_batch(parse_bytes(max_memory), reader.dim, doc_codes, depth, params)
    job = NeighbourJob(reader.directory, tuple(reader.manifest.segments), reader.language_stats,
                       reader.row_column("lang").astype(str), doc_codes, params, depth, batch)
    index, rows = job.opened()
    started, timed = time.perf_counter(), 0
    for number in range(segments):
        segment_neighbours(job, index, rows, number)
        timed += job.segments[number]["rows"]
    rate = timed / (time.perf_counter() - started)
    return {"batch": job.batch, "rows_timed": timed, "rows_per_s": round(rate, 1), "estimated_s": round(len(doc_codes) / rate, 1)}


def run(rows: int, max_memory: str, shard_rows: int, work: Path, with_append: bool, scoring: str,
        time_neighbourhoods: int = 0) -> dict:
    shards = write_shards(work / "shards", rows, shard_rows)
    index = work / "index"
    shutil.rmtree(index, ignore_errors=True)
    built = build(shards, index, max_memory, scoring)
    print(json.dumps(built), flush=True)
    queries, langs = with_languages(FittedMixture.load(SHIPPED_MIXTURE, seed=9).draw(QUERIES), np.random.default_rng(9),
                                    LANGUAGES_SEED)
    raw_mb = rows * queries.shape[1] * 4 / 2**20
    tuned = json.loads((index / "manifest.json").read_text())["index"]  # the depths: the queries' and the neighbourhoods'
    result = {"rows": rows, "max_memory": max_memory, "shard_rows": shard_rows, "scoring": scoring, **built,
              **{name: tuned[name] for name in ("params", "neighbourhood_params", "neighbourhoods_within") if name in tuned},
              "raw_vectors_mb": round(raw_mb), "rss_share_of_raw": round(built["peak_rss_mb"] / raw_mb, 3),
              "recall@10": round(recall_at_10(index, queries, langs), 4),
              "cold_query_p50_ms": cold_query_ms(index, queries, langs, work)}
    if time_neighbourhoods:
        result["neighbourhoods_estimate"] = neighbourhood_rate(index, time_neighbourhoods, max_memory)
    if with_append:
        result["append"] = append_check(index, rows, work, max_memory, scoring, queries, langs)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--max-memory", default="256MB")
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/xlsearch-out-of-core"))
    parser.add_argument("--append", action="store_true", help="also append 1%% and build the same rows again")
    parser.add_argument("--scoring", default=PARALLEL_MARGIN, help="the index's scoring; cosine computes no neighbourhoods")
    parser.add_argument("--time-neighbourhoods", type=int, default=0, metavar="SEGMENTS",
                        help="time the default scoring's neighbourhoods of this many segments of the index built")
    parser.add_argument("--quick", action="store_true", help="a smoke run: its results file is named -quick, "
                        "and bench.report leaves it out")
    parser.add_argument("--child-build", nargs=4, metavar=("SHARDS", "INDEX", "BUDGET", "SCORING"), help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    if ARGS.child_build:
        child_build(Path(ARGS.child_build[0]), Path(ARGS.child_build[1]), *ARGS.child_build[2:])
    else:
        report = run(ARGS.rows, ARGS.max_memory, ARGS.shard_rows, ARGS.work, ARGS.append, ARGS.scoring,
                     ARGS.time_neighbourhoods)
        print(json.dumps(report, indent=2))
        RESULTS.mkdir(exist_ok=True)
        name = (f"out_of_core-{ARGS.rows}-{ARGS.max_memory}" + ("" if ARGS.scoring == PARALLEL_MARGIN else f"-{ARGS.scoring}")
                + ("-quick" if ARGS.quick else ""))
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
