"""`make bench`: every benchmark, its figures printed as tables and written to bench/results/*.json.
`--quick` runs small sizes as a smoke test (CI runs it; its timings mean nothing).

    python -m bench [--quick] [--only vector_realism,index_types,million,cold_query,pipeline,concurrency,serve_load,embed_throughput,append]"""

from __future__ import annotations

import argparse
import json
import platform

from rich.console import Console
from rich.table import Table

from bench import RESULTS

BENCHMARKS = ("vector_realism", "index_types", "million", "cold_query", "pipeline", "concurrency", "serve_load",
              "embed_throughput", "append")
console = Console(width=250)  # wide tables stay whole in a log or a pipe
REAL_VECTORS = 100_000  # real embeddings: the 100k x 384 set itself, and what the larger sets are fitted to
REAL_VECTORS_QUICK = 1_500


def embedding_progress(done: int, total: int) -> None:
    console.print(f"  embedding Tatoeba sentences (cached after the first run): {done:,} / {total:,}")


def table(title: str, rows: list[dict], columns: list[str]) -> None:
    view = Table(title=title)
    for column in columns:
        view.add_column(column, justify="left" if column in ("key", "kind", "storage", "auto_picks", "params") else "right")
    for row in rows:
        view.add_row(*(str(row.get(column, "")) for column in columns))
    console.print(view)


def vector_realism(quick: bool) -> list[dict]:
    from bench import vector_realism as bench
    from bench.realistic_vectors import MIXTURE_COMPONENTS, real_vectors

    real = real_vectors(REAL_VECTORS_QUICK if quick else REAL_VECTORS, progress=embedding_progress)
    rows = bench.run(real, (1, 16) if quick else (1, 32, MIXTURE_COMPONENTS, 128, 256, 1024),
                     progress=lambda row: console.print(f"  {row['set']}: done in {row['seconds']} s"))
    curves = [{**{name: row[name] for name in ("set", "cosine_1st", "cosine_10th", "cosine_random")},
               **{key: " ".join(f"{p[depth]}:{p['recall@10']}" for p in row[key]) for key, depth in bench.curves(row)}}
              for row in rows]
    table("real embeddings against fitted mixtures: recall@10 per efSearch / nprobe", curves, list(curves[0]))
    return rows


def index_types(quick: bool) -> list[dict]:
    from bench import index_types as bench
    from bench.realistic_vectors import real_vectors

    real = real_vectors(REAL_VECTORS_QUICK if quick else REAL_VECTORS, progress=embedding_progress)
    rows = bench.run(real, quick, progress=lambda row: console.print(f"  {row['count']:,} x {row['dim']} {row['key']}: done"))
    table("index types (real embeddings and a mixture fitted to them, held-out queries, k=10)", rows,
          ["source", "count", "dim", "key", "auto_picks", "build_s", "peak_rss_mb", "index_mb", "estimated_mb", "params",
           "recall@10", "p50_ms", "p99_ms", "batch_qps", "flat_gb_s", "matvec_gb_s"])
    return rows


def million(quick: bool) -> list[dict]:
    from bench import million as bench
    from bench.realistic_vectors import real_vectors

    real = real_vectors(REAL_VECTORS_QUICK if quick else REAL_VECTORS, progress=embedding_progress)
    def built(row: dict) -> None:
        console.print(f"  {row['set']}: built in {row['build_s']} s")

    rows = bench.run(real, 3_000, (16,), progress=built) if quick else bench.run(real, progress=built)
    table("HNSW32 at 1M: recall@10 (p50 ms) per efSearch", [
        {**{name: row[name] for name in ("set", "count", "build_s", "tuned_efSearch", "tuned_recall@10")},
         "curve": " ".join(f"{p['efSearch']}:{p['recall@10']} ({p['p50_ms']})" for p in row["hnsw32"])} for row in rows],
        ["set", "count", "build_s", "tuned_efSearch", "tuned_recall@10", "curve"])
    return rows


def cold_query(quick: bool) -> dict:
    from bench import cold_query as bench

    row = bench.run(REAL_VECTORS_QUICK if quick else REAL_VECTORS, repeats=2 if quick else 9)
    table("cold command-line query vs start-up baseline (medians)", [row], list(row))
    return row


def pipeline(quick: bool) -> dict:
    from bench import pipeline_overhead as bench

    row = bench.run(160 if quick else 4_000)
    table("xlsearch index vs the raw model, same texts, same run", [row], list(row))
    return row


def concurrency(quick: bool) -> list[dict]:
    from bench import concurrency as bench

    report = []
    for delay in (0.05,) if quick else (0.05, 0.2):
        rows = bench.run([1, 4] if quick else [1, 4, 8, 16], delay, 8 if quick else 64, 1)
        table(f"openai backend, {delay * 1000:.0f} ms added per request", rows, list(rows[0]))
        report.append({"delay_s": delay, "batch_size": 1, "results": rows})
    return report


def serve_load(quick: bool) -> list[dict]:
    from bench import serve_load as bench

    rows = bench.run((1, 4) if quick else (1, 16, 64), 12 if quick else 400)
    table("xlsearch serve: concurrent clients, distinct queries, with and without publishes under them", rows, list(rows[0]))
    return rows


def embed_throughput(quick: bool) -> dict:
    from bench import embed_throughput as bench

    # 10,000: Ray pays a fixed cost per job (about 11 s quiet, 22 s loaded); from about 7,500 sentences on
    # this machine quiet its job is within 15% of in-process, at 2,000 the fixed cost is most of it (README)
    row = bench.run(200 if quick else 10_000)
    table("xlsearch embed: in-process vs Ray Data on this machine (local model, no cache)", [row], list(row))
    stages = [bench.cpu_stages(2_000 if quick else 20_000, dim) for dim in (384, 2_560)]
    table("xlsearch embed's CPU stages on one core: read, chunk, write shards (no model)", stages, list(stages[0]))
    return {"jobs": row, "cpu_stages": stages}


def append(quick: bool) -> dict:
    from bench import append as bench

    row = bench.run(3_000 if quick else bench.COUNT, progress=console.print)
    table("appending 1% to an index against rebuilding it (auto's index, language-neutral margin)", [row], list(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    runners = {"vector_realism": vector_realism, "index_types": index_types, "million": million, "cold_query": cold_query, "pipeline": pipeline, "concurrency": concurrency,
               "serve_load": serve_load, "embed_throughput": embed_throughput,
               "append": append}
    for name in args.only.split(","):
        if name not in runners:
            parser.error(f"--only {name!r}: expected some of {', '.join(BENCHMARKS)}")
        result = runners[name](args.quick)
        out = RESULTS / f"{name}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps({"machine": platform.node(), "processor": platform.processor() or platform.machine(),
                                   "quick": args.quick, "results": result}, indent=2) + "\n")
        console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
