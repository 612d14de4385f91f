"""The test servers' own start-up: a port found free can be taken before the server binds it (CI once sent a
health check to a local Ray's gRPC port), and `started` must then start the server on another port rather
than fail the test or talk to the stranger."""

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from testkit.servers import started

pytestmark = pytest.mark.processes


@contextmanager
def speaking_gibberish(port: int) -> Iterator[None]:
    """A stranger listening on `port` that answers every connection with bytes that are not HTTP."""
    listener = socket.create_server(("127.0.0.1", port))

    def answer() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the block ended
                return
            with connection:
                connection.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x7f\xff\xff\xff")

    threading.Thread(target=answer, daemon=True).start()
    with listener:
        yield


@contextmanager
def holding(port: int) -> Iterator[None]:
    """A stranger holding `port` without listening: connections are refused and no one else can bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        yield


@pytest.mark.parametrize("stranger", [speaking_gibberish, holding])
def test_a_port_taken_before_the_server_binds_it_is_left_for_another(stranger):
    ports = []
    with ExitStack() as strangers:
        def command(port: int) -> list[str]:
            if not ports:  # the stranger wins the race for the first port drawn
                strangers.enter_context(stranger(port))
            ports.append(port)
            return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]

        with started(command, health="/") as (base, process):
            assert process.poll() is None
            assert base == f"http://127.0.0.1:{ports[-1]}"
    assert len(ports) == 2 and ports[0] != ports[1]
