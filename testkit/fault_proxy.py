"""A fault-injecting HTTP proxy for an OpenAI-compatible embeddings server, on loopback. Each POST takes
the next fault from a script (or none) and either forwards the request or misbehaves in one of the ways
real servers do. Also serves as the fixed-latency server of the throughput benchmark.

No fault depends on the clock: a "timeout" is held unanswered until the client hangs up (so the
client's own timeout is the only clock involved), and a server that dies mid job dies after a given
number of requests. Counters are updated as a request arrives, before any answer, so they are final
once the client has its answers."""

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
FAULTS = ("429", "500", "503", "timeout", "reset", "malformed", "wrong_dim", "html_502")


class FaultProxy:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.delay = delay  # seconds added to every embeddings request
        self.script: collections.deque[str] = collections.deque()
        self.poison: tuple[str, str] | None = None  # (marker, error shape): inputs containing it get a 400
        # the server dies after taking this many embeddings requests: every later connection is reset
        # as it arrives (counting requests, not seconds, puts the death at the same point of every run)
        self.die_after: int | None = None
        self.refuse_dimensions = False  # answer a `dimensions` field as SGLang does without is_matryoshka
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
                if proxy._dead():
                    return self._reset()
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    if proxy._dead():
                        return self._reset()
                    proxy.requests += 1
                    sent = json.loads(body).get("input", [])
                    proxy.inputs.extend([sent] if isinstance(sent, str) else sent)
                    fault = proxy.script.popleft() if proxy.script else None
                    if fault:
                        proxy.faults_served.append(fault)
                if proxy.delay:
                    time.sleep(proxy.delay)
                if proxy.refuse_dimensions and "dimensions" in json.loads(body):
                    message = "matryoshka dimensions are not supported by this model"
                    return self._reply(400, json.dumps(ERROR_BODIES["sglang"](message)).encode())
                if proxy.poison and proxy.poison[0] in body.decode("utf-8", "replace"):
                    marker, shape = proxy.poison
                    return self._reply(400, json.dumps(ERROR_BODIES[shape](f"input contains forbidden token {marker}")).encode())
                if fault in ("429", "500", "503"):
                    return self._reply(int(fault), json.dumps(ERROR_BODIES["vllm"](f"injected {fault}")).encode(),
                                       {"Retry-After": "0"} if fault == "429" else None)
                if fault == "html_502":
                    return self._reply(502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
                if fault == "timeout":
                    return self._hold()
                if fault == "reset":
                    return self._reset()
                if fault == "malformed":
                    return self._reply(200, b'{"object": "list", "data": [{"embedding": [0.1, ')
                self._forward(body, wrong_dim=fault == "wrong_dim")

            def _forward(self, body: bytes | None, wrong_dim: bool = False) -> None:
                request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, content = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    status, content = exc.code, exc.read()
                if wrong_dim:
                    data = json.loads(content)
                    for row in data["data"]:
                        row["embedding"] = row["embedding"][:100]
                    content = json.dumps(data).encode()
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

    def _dead(self) -> bool:
        return self.die_after is not None and self.requests >= self.die_after

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._closing = True
            for connection in self._held:  # release what a client never gave up on
                with contextlib.suppress(OSError):  # already reset by the client
                    connection.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
