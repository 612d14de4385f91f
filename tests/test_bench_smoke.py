"""`python -m bench --quick` runs every benchmark end to end at small sizes and writes its JSON. No
timing is asserted: the figures that matter come from `make bench` (docs/benchmarks.md)."""

import json
import os
import subprocess

import pytest
import sys

from tests.conftest import ROOT, SLOW_TEST_TIMEOUT

# they start processes: the real command, servers
pytestmark = pytest.mark.processes


@pytest.mark.slow
def test_quick_benchmarks_run_and_write_their_results(tatoeba):
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=SLOW_TEST_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {name: json.loads((ROOT / "bench" / "results" / f"{name}-quick.json").read_text())["results"]
               for name in ("vector_realism", "index_types", "million", "cold_query", "pipeline", "concurrency",
                            "embed_throughput")}
    assert [row["set"] for row in results["vector_realism"]] == ["real", "one Gaussian", "mixture of 16"]
    for row in results["vector_realism"]:
        recalls = [point["recall@10"] for point in row["hnsw32"]]
        assert all(0 < r <= 1 for r in recalls) and recalls[-1] >= recalls[0]  # a deeper search finds more
        assert row["cosine_1st"] >= row["cosine_10th"] > row["cosine_random"]
    real = {row["key"]: row for row in results["index_types"] if row["source"] == "real"}
    assert set(real) == {"Flat", "HNSW32", "IVF30,SQ8", "IVF30,PQ48"}
    assert {row["count"] for row in real.values()} == {1200}  # 1,500 embedded, 300 held out as queries
    assert real["Flat"]["recall@10"] == 1.0  # exact search is the reference itself
    for row in results["index_types"]:
        assert 0 < row["recall@10"] <= 1 and row["p50_ms"] <= row["p99_ms"] and row["index_mb"] > 0
    assert real["IVF30,PQ48"]["index_mb"] < real["Flat"]["index_mb"]
    assert [(row["count"], row["dim"]) for row in results["index_types"] if row["source"] == "fitted"] == [(3000, 64)]
    (million,) = results["million"]
    assert million["count"] == 3000 and million["tuned_efSearch"] in [p["efSearch"] for p in million["hnsw32"]]
    assert million["tuned_recall@10"] >= 0.95
    assert results["cold_query"]["documents"] == 1500 and results["cold_query"]["ratio"] > 0
    assert results["pipeline"]["documents"] == 160 and results["pipeline"]["ratio"] > 0
    assert [row["concurrency"] for row in results["concurrency"][0]["results"]] == [1, 4]
    jobs = results["embed_throughput"]["jobs"]
    assert jobs["same_shards"] and jobs["documents"] == 200
    for mode in ("in_process", "ray"):  # a rate once running where the larger job took longer, else none
        assert jobs[f"{mode}_running_docs_s"] is None or jobs[f"{mode}_running_docs_s"] > 0


def test_the_out_of_core_benchmark_runs_and_estimates_the_neighbourhoods(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.out_of_core", "--rows", "6000", "--shard-rows", "2000",
                           "--max-memory", "4MB", "--scoring", "cosine", "--time-neighbourhoods", "1", "--quick",
                           "--work", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((ROOT / "bench" / "results" / "out_of_core-6000-4MB-cosine-quick.json").read_text())
    assert "on disk" in result["plan"] and "neighbourhoods" not in result["stages"]
    assert 0 < result["recall@10"] <= 1 and result["peak_rss_mb"] > 0
    assert result["neighbourhood_params"]["nprobe"] >= result["params"]["nprobe"]  # what the estimate searches at
    assert result["neighbourhoods_estimate"]["rows_timed"] == 2000 and result["neighbourhoods_estimate"]["estimated_s"] > 0


def test_a_benchmark_without_the_tatoeba_data_stops_with_one_line_naming_where_it_looked(tmp_path):
    """XLSEARCH_TATOEBA at a directory without the pairs: the benchmark that reads them stops at once, before
    it embeds or builds anything, with one line (not a traceback from FAISS on an empty set)."""
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "pipeline"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "XLSEARCH_TATOEBA": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.strip() == f"no Tatoeba test pairs (tatoeba.cmn-eng.cmn) at {tmp_path}: set XLSEARCH_TATOEBA to their directory"
