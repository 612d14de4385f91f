"""`python -m bench --quick` runs every benchmark end to end at small sizes and writes its JSON. No
timing is asserted: the figures that matter come from `make bench` (docs/benchmarks.md)."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_quick_benchmarks_run_and_write_their_results(tatoeba):
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {name: json.loads((ROOT / "bench" / "results" / f"{name}-quick.json").read_text())["results"]
               for name in ("index_types", "cold_query", "pipeline", "concurrency")}
    kinds = {row["key"]: row for row in results["index_types"]}
    assert set(kinds) == {"Flat", "HNSW32", "IVF128,SQ8", "IVF128,PQ8"}
    assert kinds["Flat"]["recall@10"] == 1.0  # exact search is the reference itself
    for row in kinds.values():
        assert 0 < row["recall@10"] <= 1 and row["p50_ms"] <= row["p99_ms"] and row["index_mb"] > 0
    assert kinds["IVF128,PQ8"]["index_mb"] < kinds["Flat"]["index_mb"]
    assert results["cold_query"]["documents"] == 2000 and results["cold_query"]["ratio"] > 0
    assert results["pipeline"]["documents"] == 160 and results["pipeline"]["ratio"] > 0
    assert [row["concurrency"] for row in results["concurrency"][0]["results"]] == [1, 4]
