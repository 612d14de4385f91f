"""Several servers behind one backend: least outstanding work first, a failing server rested for a
while, exponential backoff with jitter between tries."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

BACKOFF_CAP = 8.0  # seconds: the longest wait between two tries of one request
REST_BASE, REST_CAP = 1.0, 30.0  # seconds a failing server is left alone, doubling per failure


@dataclass
class Endpoint:
    url: str
    client: object  # openai.AsyncOpenAI bound to this URL
    outstanding: int = 0  # inputs in flight
    failures: int = 0  # consecutive
    resting_until: float = 0.0

    def failed(self) -> None:
        self.failures += 1
        self.resting_until = time.monotonic() + min(REST_CAP, REST_BASE * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures = 0
        self.resting_until = 0.0


@dataclass
class EndpointPool:
    endpoints: list[Endpoint] = field(default_factory=list)

    def pick(self) -> Endpoint:
        """The live server with least work in flight; when all are resting, the one back soonest (a
        request's own retries bound how long a dead fleet is tried)."""
        now = time.monotonic()
        live = [e for e in self.endpoints if e.resting_until <= now]
        if live:
            return min(live, key=lambda e: e.outstanding)
        return min(self.endpoints, key=lambda e: e.resting_until)


def backoff(attempt: int, base: float, retry_after: float | None = None) -> float:
    """Full jitter (uniform up to base * 2^attempt, capped); a server's Retry-After is a floor."""
    wait = random.uniform(0, min(BACKOFF_CAP, base * 2**attempt))
    return max(wait, min(retry_after or 0.0, BACKOFF_CAP))
