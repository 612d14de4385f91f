"""What travels over the wire to and from OpenAI-compatible servers: URLs, error bodies, embeddings."""

from __future__ import annotations

import base64
import json
import re

import numpy as np

from xlsearch.engine.errors import InputError

REJECTING_STATUS = {400, 413, 422}  # the input is at fault: never retried
RETRYING_STATUS = {408, 409, 425, 429}  # and every 5xx


def is_retried(status: int) -> bool:
    """Whether an answer of `status` is tried again (the server busy or failing, not the input at fault)."""
    return status in RETRYING_STATUS or status >= 500


def retry_after(headers) -> float | None:
    """The seconds a server's Retry-After header asks for, if it gives a number."""
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def normalize_endpoint(url: str) -> str:
    """`http://host:30000` and `http://host:30000/v1/` both become `http://host:30000/v1`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError("expected an http:// or https:// URL", field="endpoints", value=url)
    return url if url.endswith("/v1") else url + "/v1"


# A server's message is shown in one line of an error: enough for a proxy's page title or a traceback's end
MESSAGE_CHARS = 300
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]+>")


def one_line(text: str) -> str:
    """A body that is no JSON, as one line: an HTML page (a proxy's or load balancer's error page) by its
    title, else its text without tags, whitespace collapsed, at most MESSAGE_CHARS."""
    title = _HTML_TITLE.search(text)
    text = title.group(1) if title else _HTML_TAG.sub(" ", text)
    return " ".join(text.split())[:MESSAGE_CHARS]


def server_message(body: object) -> str:
    """The human part of an error body, whichever server wrote it: SGLang's flat
    `{"object": "error", "message"}`, vLLM/OpenAI's nested `{"error": {"message"}}`, TEI's
    `{"error": "...", "error_type"}` or `{"message", "code", "type"}`."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return one_line(body if isinstance(body, str) else body.decode("utf-8", "replace"))
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
    return one_line(str(body))


def decode_embedding(value: object) -> np.ndarray:
    """A float list, or base64 of little-endian float32 (the OpenAI client's default encoding)."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


class MalformedResponse(ValueError):
    """A 200 answer that is not the embeddings it should be."""


def parse_embeddings(content: bytes, expected: int) -> tuple[list[np.ndarray], int]:
    """Rows in input order and the prompt tokens counted, from a `/v1/embeddings` answer body."""
    try:
        body = json.loads(content)
        rows = sorted(body["data"], key=lambda d: d["index"])
        vectors = [decode_embedding(r["embedding"]) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedResponse(f"malformed answer ({type(exc).__name__}: {str(exc)[:120]})") from None
    if len(vectors) != expected:
        raise MalformedResponse(f"{len(vectors)} embeddings for {expected} inputs")
    usage = body.get("usage") or {}
    return vectors, int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
