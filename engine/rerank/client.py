"""Scores from a rerank server over HTTP, with the embedding backend's rules: the first request finds the
server's rerank path and fails at once when nothing listens there (as the embedding servers' probe
does); 429, 5xx, timeouts, resets and malformed answers are tried again with jittered exponential backoff
(`max_retries`, Retry-After honoured); a 400/413/422 refuses the query and is never retried."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request

from xlsearch.engine.embedders.endpoints import backoff
from xlsearch.engine.embedders.limits import shown
from xlsearch.engine.embedders.openai_api import DEFAULT_BATCH_SIZE
from xlsearch.engine.embedders.wire import REJECTING_STATUS, MalformedResponse, is_retried, retry_after, server_message
from xlsearch.engine.errors import BackendError, InputError
from xlsearch.engine.rerank.dialects import candidate_urls, parse_scores, request_body
from xlsearch.engine.rerank.spec import RerankSpec

BACKOFF_BASE = 0.5  # seconds, as the embedding backend's
NOT_HERE = {404, 405}  # no rerank API at this path: the next candidate path is asked


class _NotHere(Exception):
    pass


class RerankClient:
    def __init__(self, spec: RerankSpec) -> None:
        self.spec = spec
        self._candidates = candidate_urls(spec.endpoint)
        self.url: str | None = None  # the path that answered
        self.dialect: str | None = None  # sglang, vllm or tei: told by the first answer
        self._finding = threading.Lock()  # one request finds the path; the others wait for it

    def scores(self, query: str, documents: list[str], instruct: str | None = None) -> list[float]:
        """Each document's relevance to `query`, in order; sent DEFAULT_BATCH_SIZE documents a request
        (TEI's default limit; the scores are each pair's own, so batches compare)."""
        scores: list[float] = []
        for start in range(0, len(documents), DEFAULT_BATCH_SIZE):
            batch = documents[start:start + DEFAULT_BATCH_SIZE]
            body = json.dumps(request_body(query, batch, instruct, self.spec.model), ensure_ascii=False).encode()
            scores += self._scored(body, len(batch), query)
        return scores

    def _scored(self, body: bytes, expected: int, query: str) -> list[float]:
        if self.url is not None:
            return self._with_retries(self.url, body, expected, query)
        with self._finding:
            if self.url is not None:
                return self._with_retries(self.url, body, expected, query)
            for url in self._candidates:
                try:
                    return self._with_retries(url, body, expected, query, finding=True)
                except _NotHere:
                    continue
        raise BackendError(f"no rerank API at {' or '.join(self._candidates)} (404): expected SGLang's or "
                           "vLLM's /v1/rerank or TEI's /rerank", field="rerank_endpoint", value=self.spec.endpoint)

    def _send(self, url: str, body: bytes) -> tuple[int, bytes, object]:
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key:
            headers["Authorization"] = f"Bearer {self.spec.api_key}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.spec.timeout) as answer:
                return answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers

    def _with_retries(self, url: str, body: bytes, expected: int, query: str, finding: bool = False) -> list[float]:
        attempt = 0
        while True:
            wait = None
            try:
                status, content, headers = self._send(url, body)
            except TimeoutError:
                last = f"reranker {url} timed out"
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, cut short
                last = f"cannot reach reranker {url}: {getattr(exc, 'reason', exc)}"
                if finding:  # nothing listens there: fail now, as a dead embedding server does
                    raise BackendError(last) from None
            else:
                if status == 200:
                    try:
                        scores, dialect = parse_scores(content, expected, url)
                    except MalformedResponse as exc:
                        last = f"reranker {url}: {exc}"
                    else:
                        self.url, self.dialect = url, dialect
                        return scores
                elif finding and status in NOT_HERE:
                    raise _NotHere()
                elif status in REJECTING_STATUS:
                    raise InputError(f"query {shown(query)} was refused by reranker {url}: {server_message(content)}")
                elif is_retried(status):
                    last, wait = f"reranker {url} answered {status}: {server_message(content)}", retry_after(headers)
                else:
                    raise BackendError(f"reranker {url} answered {status}: {server_message(content)}")
            if attempt >= self.spec.max_retries:
                raise BackendError(f"gave up after {attempt + 1} tries: {last}")
            time.sleep(backoff(attempt, BACKOFF_BASE, wait))
            attempt += 1
