"""Several servers behind one backend: least outstanding work first, a failing server rested for a
while, exponential backoff with jitter between tries, and the fleet's outages (no server taking work)
timed."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

BACKOFF_CAP = 8.0  # seconds: the longest wait between two tries of one request
REST_BASE, REST_CAP = 1.0, 30.0  # seconds a failing server is left alone, doubling per failure
DEFAULT_MAX_OUTAGE = 600.0  # seconds a job waits for a server while none takes work: a restarting SGLang
# loads 8 GB of weights (Qwen3-Embedding-4B) in minutes


@dataclass
class Endpoint:
    url: str
    client: object  # openai.AsyncOpenAI bound to this URL
    outstanding: int = 0  # inputs in flight
    failures: int = 0  # consecutive
    resting_until: float = 0.0
    down: bool = False  # its latest answer was none at all, or "no work taken now" (502/503/504)

    @property
    def health_url(self) -> str:
        """SGLang's, vLLM's and TEI's /health sit beside /v1, not under it."""
        return self.url.removesuffix("/v1") + "/health"


@dataclass
class EndpointPool:
    endpoints: list[Endpoint] = field(default_factory=list)
    down_since: float | None = None  # when the last server taking work went down; None while one takes work

    def pick(self) -> Endpoint:
        """The live server with least work in flight; when all are resting, the one back soonest."""
        now = time.monotonic()
        live = [e for e in self.endpoints if e.resting_until <= now]
        if live:
            return min(live, key=lambda e: e.outstanding)
        return min(self.endpoints, key=lambda e: e.resting_until)

    def failed(self, endpoint: Endpoint, down: bool, rest: bool = True) -> bool:
        """Record a failure; True when it leaves no server taking work, i.e. an outage begins."""
        if rest:
            endpoint.failures += 1
            endpoint.resting_until = time.monotonic() + min(REST_CAP, REST_BASE * 2 ** (endpoint.failures - 1))
        endpoint.down = down
        if self.down_since is None and all(e.down for e in self.endpoints):
            self.down_since = time.monotonic()
            return True
        return False

    def succeeded(self, endpoint: Endpoint) -> float | None:
        """Record a success; the seconds of the outage it ends, or None when there was none."""
        endpoint.failures, endpoint.resting_until, endpoint.down = 0, 0.0, False
        ended, self.down_since = self.down_since, None
        return None if ended is None else time.monotonic() - ended

    def waiting(self) -> float:
        """Seconds the fleet has been down: 0 while a server takes work."""
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since


def backoff(attempt: int, base: float, retry_after: float | None = None, cap: float = BACKOFF_CAP) -> float:
    """Full jitter (uniform up to base * 2^attempt, capped); a server's Retry-After is a floor."""
    wait = random.uniform(0, min(cap, base * 2**attempt))
    return max(wait, min(retry_after or 0.0, cap))
