"""The real `xlsearch` commands on the demo corpus and on hand-made corpora."""

import json
import shutil

import pytest

from tests.conftest import DEMO_CORPUS, assert_clean_failure, xlsearch, xlsearch_json

# they start processes: the real command, servers
pytestmark = pytest.mark.processes

WEATHER_QUERY = "今天天气真好，适合出去散步"
SIMILARITY_TEXTS = [
    "今天天气真好，适合出去散步",
    "The weather is great today, perfect for a walk",
    "今日の天気はとても良いです、散歩に最適です",
    "오늘 날씨가 정말 좋네요, 산책하기 딱 좋아요",
]


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("demo") / "index"
    result = xlsearch("index", DEMO_CORPUS, "--index", index_dir)
    assert result.returncode == 0, result.stderr
    return index_dir


def test_index_reports_what_it_indexed(demo_index):
    manifest = json.loads((demo_index / "manifest.json").read_text())
    assert manifest["count"] >= 300
    assert {"zh", "en", "ja", "ko"} <= set(manifest["languages"]) and len(manifest["languages"]) >= 8
    assert manifest["model"] == "multilingual-e5-small-q4" and manifest["dim"] == 384
    assert set(manifest["checksums"]) == {"index.faiss", "meta.parquet", "vectors.npy", "languages.npz", "neighbourhood.npy",
                                          "neighbour_scores.npy", "neighbour_rows.npy"}
    assert manifest["language_neutral"]["method"] == "center+lir1"
    assert len(manifest["language_neutral"]["languages"]) == 8


def test_weather_query_finds_the_walk_in_several_languages(demo_index):
    result = xlsearch_json("query", WEATHER_QUERY, "--index", demo_index, "-k", "8")
    hits = result["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 9))
    assert all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(len(hits) - 1))
    # language-neutral ranking: all eight translations first, before any other Chinese document
    assert {h["group"] for h in hits} == {"weather-walk"}, [(h["id"], h["score"]) for h in hits]
    assert len({h["lang"] for h in hits}) == 8


def test_without_language_neutral_ranking_the_query_language_crowds_in(tmp_path):
    index_dir = tmp_path / "plain"
    built = xlsearch("index", DEMO_CORPUS, "--index", index_dir, "--no-language-neutral")
    assert built.returncode == 0, built.stderr
    assert json.loads((index_dir / "manifest.json").read_text())["language_neutral"] is None
    hits = xlsearch_json("query", WEATHER_QUERY, "--index", index_dir, "-k", "8")["hits"]
    others = [h["id"] for h in hits if h["group"] != "weather-walk"]
    assert any(h.endswith("-zh") for h in others), others


def test_query_table_shows_rank_score_language_id_and_text(demo_index):
    result = xlsearch("query", WEATHER_QUERY, "--index", demo_index, "-k", "3")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "rank" in line)
    for column in ("rank", "score", "lang", "id", "text"):
        assert column in header
    assert "weather-walk" in result.stdout


def test_language_filter_returns_k_hits_in_those_languages_only(demo_index):
    hits = xlsearch_json("query", WEATHER_QUERY, "--index", demo_index, "-k", "20", "--lang", "jpn,ko-KR")["hits"]
    assert len(hits) == 20
    assert {h["lang"] for h in hits} == {"ja", "ko"}
    assert hits[0]["group"] == "weather-walk"


def test_batch_queries_write_one_jsonl_line_per_query(demo_index, tmp_path):
    queries = tmp_path / "queries.jsonl"
    lines = [{"text": WEATHER_QUERY}, {"text": "Mein Zug hat Verspätung"}, {"text": "배터리가 빨리 닳아요"}]
    queries.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in lines), encoding="utf-8")
    result = xlsearch("query", "--queries", queries, "--index", demo_index, "-k", "2")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query"] for r in records] == [q["text"] for q in lines]
    assert all(len(r["hits"]) == 2 and set(r["hits"][0]) >= {"rank", "score", "id", "lang", "text"} for r in records)
    plain = tmp_path / "queries.txt"
    plain.write_text("\n".join(q["text"] for q in lines) + "\n", encoding="utf-8")
    again = xlsearch("query", "--queries", plain, "--index", demo_index, "-k", "2")
    assert [json.loads(line) for line in again.stdout.splitlines()] == records


def test_info_in_human_and_json_form(demo_index):
    result = xlsearch("info", "--index", demo_index)
    assert result.returncode == 0 and "multilingual-e5-small-q4" in result.stdout and "Flat" in result.stdout
    manifest = xlsearch_json("info", "--index", demo_index)
    assert manifest["count"] == json.loads((demo_index / "manifest.json").read_text())["count"]


def test_similarity_matrix_of_the_motivating_sentences():
    result = xlsearch_json("similarity", *SIMILARITY_TEXTS)
    matrix = result["matrix"]
    assert len(matrix) == 4
    off_diagonal = [matrix[i][j] for i in range(4) for j in range(4) if i != j]
    assert min(off_diagonal) > 0.8, matrix
    table = xlsearch("similarity", *SIMILARITY_TEXTS)
    assert table.returncode == 0 and "cosine similarity" in table.stdout


def test_reindexing_is_served_from_the_embedding_cache(demo_index, tmp_path):
    again = xlsearch_json("index", DEMO_CORPUS, "--index", tmp_path / "again")
    assert again["indexed"] == json.loads((demo_index / "manifest.json").read_text())["count"]
    assert (tmp_path / "again" / "index.faiss").read_bytes() == (demo_index / "index.faiss").read_bytes()


def test_query_with_another_model_is_refused_naming_both(demo_index, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(demo_index, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"] = "intfloat/multilingual-e5-large"
    manifest["embedder"].update(backend="openai", model=manifest["model"], endpoints=["http://127.0.0.1:9/v1"])
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = xlsearch("query", "hello", "--index", other, "--backend", "local")
    assert_clean_failure(result, "'intfloat/multilingual-e5-large' at 384 dims", "'multilingual-e5-small-q4' at 384 dims")


def test_bad_inputs_exit_2_with_one_clear_line(tmp_path):
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"id": 1, "body": "hello"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n   \n")
    unknown = tmp_path / "corpus.xyz"
    unknown.write_text("hello")
    cases = [
        (tmp_path / "missing.jsonl", "missing.jsonl: no such file or directory"),
        (no_text, "no field 'text'"),
        (empty, "no documents to index"),
        (unknown, "unknown corpus format '.xyz'"),
    ]
    for corpus, message in cases:
        result = xlsearch("index", corpus, "--index", tmp_path / "out")
        assert_clean_failure(result, message)
    assert not (tmp_path / "out").exists()
    assert_clean_failure(xlsearch("query", "x", "--index", tmp_path / "nowhere"), "no such index directory")
    assert_clean_failure(xlsearch("query", "x", "--index", tmp_path / "out", "--lang", "xx"), "unknown language code 'xx'")
    assert_clean_failure(xlsearch("index", no_text, "--index", tmp_path / "out", "--backend", "nope"), "--backend 'nope'")


def test_a_failed_build_leaves_the_previous_index_intact(demo_index, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine", "lang": "en"}\n{"text": \n')
    before = (demo_index / "manifest.json").read_text()
    assert_clean_failure(xlsearch("index", broken, "--index", demo_index), "broken.jsonl:2: invalid JSON")
    assert (demo_index / "manifest.json").read_text() == before
    assert xlsearch("query", "rain", "--index", demo_index).returncode == 0


def test_table_shows_brackets_in_documents_literally(tmp_path):
    corpus = tmp_path / "brackets.jsonl"
    corpus.write_text(json.dumps({"id": "b1", "lang": "en", "text": "Press [bold]Enter[/bold] to [red]continue[/red]."}) + "\n"
                      + json.dumps({"id": "b2", "lang": "en", "text": "The weather is fine."}) + "\n", encoding="utf-8")
    built = xlsearch("index", corpus, "--index", tmp_path / "ix")
    assert built.returncode == 0, built.stderr
    shown = xlsearch("query", "press enter", "--index", tmp_path / "ix", "-k", "1")
    assert "Press [bold]Enter[/bold] to [red]continue[/red]." in shown.stdout
