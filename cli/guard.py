"""What `xlsearch serve` lets in: its limits, and who may ask. `Guard` checks every request's Host, key and
body size before the API sees it. Kept free of web imports: the CLI reads the defaults at start-up."""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from xlsearch.engine.errors import InputError

# The longest query accepted, in characters: several paragraphs, far past what people type. Below it a
# query longer than the model's input is cut to fit (the embedder says so); above it the request is
# refused before any embedding, whose time grows with length (a 100 KB query took 113 s).
MAX_QUERY_CHARS = 4096
MAX_BATCH = 64  # queries in one POST /search: also the most texts one model call embeds (QueryBatcher)
# Seconds a search may take, waiting included, before it is answered 503. A single query takes ~40 ms on
# 2 cores and a full batch of 64 long queries a few seconds: past this the server is overloaded, and a
# client is better told so than kept waiting. SIGTERM also waits this long at most for requests in flight.
DEADLINE_S = 10.0
# Bytes of JSON per query character a body may need: a character outside ASCII escaped as \uXXXX
# (Python's json.dumps does so by default) takes 6.
BODY_BYTES_PER_CHAR = 6
BODY_OVERHEAD_BYTES = 16 << 10  # the rest of a body: k, lang, the JSON around the queries
# Paths answered without the key: the page (static, it holds nothing of the index) and /health, which
# without the key says only that the server is up (a liveness probe needs no secret).
OPEN_PATHS = ("/", "/health")


@dataclass(frozen=True)
class Limits:
    max_query_chars: int = MAX_QUERY_CHARS
    max_batch: int = MAX_BATCH
    deadline: float = DEADLINE_S
    max_body_bytes: int | None = None  # None: what max_batch queries of max_query_chars take

    @property
    def body_bytes(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_batch * self.max_query_chars * BODY_BYTES_PER_CHAR + BODY_OVERHEAD_BYTES

    @property
    def request_line_bytes(self) -> int:
        """What a GET /search of a query at the cap may take: 12 bytes a character percent-encoded (4
        UTF-8 bytes each %XX), plus the other parameters and headers."""
        return self.max_query_chars * 12 + BODY_OVERHEAD_BYTES


@dataclass(frozen=True)
class Access:
    host: str = "127.0.0.1"  # the address listened on
    key: str | None = None  # clients send it as `Authorization: Bearer KEY`
    no_auth: bool = False  # a host other than loopback served without a key, knowingly
    allowed_hosts: tuple[str, ...] = ()  # names clients use besides IP addresses and localhost
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API; none by default

    def check(self) -> None:
        """A server reachable from other machines without a key would hand the index to anyone who can
        reach the port: refuse to start it unless told to."""
        if self.key is None and not self.no_auth and not is_loopback(self.host):
            raise InputError("listens beyond this machine: give `serve_key` (or XLSEARCH_SERVE_KEY) for clients "
                             "to send, or `no_auth` to serve without one", field="host", value=self.host)
        if self.key is not None and not self.key.strip():
            raise InputError("is empty", field="serve_key")

    def host_names(self) -> frozenset[str]:
        """Names a Host header may carry besides IP addresses: localhost, the address listened on, the
        names given and, listening on every interface, this machine's own names."""
        names = {"localhost", self.host, *self.allowed_hosts}
        if self.host in ("0.0.0.0", "::", ""):
            names |= {socket.gethostname(), socket.getfqdn()}
        return frozenset(name.lower().rstrip(".") for name in names)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """`name:port`, `[v6]:port` or a bare name -> the name or address."""
    if header.startswith("["):
        return header[1:header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str, names: frozenset[str]) -> bool:
    """A DNS-rebinding page reaches the server under the attacker's domain name, so a Host header naming
    an IP address (or none, HTTP/1.0) cannot be one; a name must be one this server answers to."""
    host = host_of(header).lower().rstrip(".")
    if not host or host in names:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: a request with a Host this server does not answer to gets 400, one without the
    key 401 (except OPEN_PATHS), one whose body is over the limit 413, each as `{"error"}`. Sets
    scope["state"]["authorized"] for the app. The body is read here, at most `max_body` bytes of it,
    and handed on whole."""

    def __init__(self, app: Callable, access: Access, max_body: int) -> None:
        self.app = app
        self.access = access
        self.names = access.host_names()
        self.max_body = max_body
        self.expected = f"Bearer {access.key}".encode() if access.key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.names):
            await send_error(send, 400, f"Host {host_of(host)!r} is not a name this server answers to "
                                        "(serve's --allowed-host adds one)")
            return
        # compare_digest: the time taken does not tell how much of a guessed key was right
        authorized = self.expected is None or hmac.compare_digest(headers.get(b"authorization", b""), self.expected)
        if not authorized and scope["path"] not in OPEN_PATHS:
            await send_error(send, 401, "this server wants its key: send `Authorization: Bearer KEY`",
                             {"www-authenticate": "Bearer"})
            return
        scope.setdefault("state", {})["authorized"] = authorized
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await send_error(send, 413, f"the body has {int(declared):,} bytes; this server takes up to {self.max_body:,}")
            return
        body = bytearray()
        while True:  # read whole (chunked bodies declare no length), never past the limit
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await send_error(send, 413, f"the body is over the {self.max_body:,} bytes this server takes")
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the app waits for a disconnect
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
