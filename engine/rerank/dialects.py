"""The rerank contracts xlsearch speaks, from the servers' own sources, and which one answered.

- SGLang (`serving_rerank.py`, `V1RerankReqInput`, 0.5.23): POST /v1/rerank {query, documents, instruct?,
  top_n?, return_documents (default true)}; answers a JSON list of {score, index, document?, meta_info?},
  best first, at most top_n; its errors are `{"object": "error", "message", ...}`, 400 for bad input.
- vLLM (`RerankRequest`): POST /v1/rerank (also /rerank, /v2/rerank) {model?, query, documents, top_n (0:
  all)}; answers {id, model, usage, results: [{index, document: {text}, relevance_score}]}, best first.
  Fields it does not know are accepted (logged as ignored).
- HF TEI (its OpenAPI, `RerankRequest`): POST /rerank {query, texts, truncate?, raw_scores?, return_text?};
  answers a JSON list of {index, score, text?}, best first; more texts than `--max-client-batch-size`
  (32 by default) are refused (413). It has no /v1/rerank (404), and ignores fields it does not know.

So one body carries every server's names for the same things, and the answer's shape tells which
server it was."""

from __future__ import annotations

import json
import math

from xlsearch.engine.embedders.wire import MalformedResponse
from xlsearch.engine.errors import InputError

SGLANG, VLLM, TEI = "sglang", "vllm", "tei"


def candidate_urls(endpoint: str) -> list[str]:
    """Where to ask, in order: a URL naming its rerank path is used as given; a base URL is asked at
    /v1/rerank (SGLang, vLLM), then /rerank (TEI)."""
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError("expected an http:// or https:// URL", field="rerank_endpoint", value=endpoint)
    if url.endswith("/rerank"):
        return [url]
    if url.endswith("/v1"):
        return [url + "/rerank"]
    return [url + "/v1/rerank", url + "/rerank"]


def request_body(query: str, documents: list[str], instruct: str | None, model: str | None) -> dict:
    """One body every server reads: `documents` (SGLang, vLLM) and `texts` (TEI); every score asked for,
    no text echoed back; TEI truncates an over-long pair rather than refusing it."""
    body = {"query": query, "documents": documents, "texts": documents, "top_n": len(documents),
            "return_documents": False, "return_text": False, "truncate": True}
    if instruct:
        body["instruct"] = instruct  # SGLang's Qwen3-Reranker instruction; the others have none
    if model:
        body["model"] = model
    return body


def parse_scores(content: bytes, expected: int, url: str) -> tuple[list[float], str]:
    """Each document's score, in the order sent, and which server's contract the answer followed."""
    try:
        body = json.loads(content)
        if isinstance(body, list):  # SGLang's or TEI's list of ranks
            dialect = TEI if not url.endswith("/v1/rerank") or any("text" in r for r in body) else SGLANG
            ranks = [(int(r["index"]), float(r["score"])) for r in body]
        else:  # vLLM's results
            dialect = VLLM
            ranks = [(int(r["index"]), float(r["relevance_score"])) for r in body["results"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedResponse(f"malformed rerank answer ({type(exc).__name__}: {str(exc)[:120]})") from None
    scores = dict(ranks)
    if sorted(scores) != list(range(expected)) or len(ranks) != expected:
        raise MalformedResponse(f"{len(ranks)} rerank scores for {expected} documents")
    if not all(math.isfinite(s) for s in scores.values()):
        raise MalformedResponse("a rerank score that is not a number")
    return [scores[i] for i in range(expected)], dialect
