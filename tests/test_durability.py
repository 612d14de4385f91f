"""Crash safety, resume, validation, writer exclusion, updates, and bad input of every kind."""

import json
import os
import random
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from xlsearch.cli.app import app
from xlsearch.engine.store.publish import CRASH_ENV, writer_lock
from tests.conftest import DEMO_CORPUS, assert_clean_failure, xlsearch, xlsearch_json

# they start processes: the real command, servers
pytestmark = pytest.mark.processes

DEMO_ROWS = [json.loads(line) for line in (DEMO_CORPUS / "demo.jsonl").read_text(encoding="utf-8").splitlines()]


def write_corpus(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def index_state(index_dir):
    """Doc ids and raw vectors by doc id and chunk: what two equal builds must share."""
    meta = pq.read_table(index_dir / "meta.parquet").to_pylist()
    vectors = np.load(index_dir / "vectors.npy")
    return {(m["doc_id"], m["chunk"]): (m["text"], vectors[i]) for i, m in enumerate(meta)}


def assert_same_index(a, b):
    state_a, state_b = index_state(a), index_state(b)
    assert state_a.keys() == state_b.keys()
    for key, (text, vector) in state_a.items():
        assert state_b[key][0] == text
        np.testing.assert_allclose(state_b[key][1], vector, atol=1e-6)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return write_corpus(root / "old.jsonl", DEMO_ROWS[:40]), write_corpus(root / "new.jsonl", DEMO_ROWS[100:220])


@pytest.mark.parametrize("point", ["embedding", "faiss", "parquet", "publish"])
def test_a_killed_build_leaves_the_old_index_and_a_rerun_resumes(corpora, tmp_path, point):
    old, new = corpora
    index_dir = tmp_path / "index"
    assert xlsearch("index", old, "--index", index_dir).returncode == 0
    args = ["index", new, "--index", index_dir, "--batch-size", "16", "--concurrency", "1", "--format", "json"]
    cache = {"XLSEARCH_CACHE_DIR": str(tmp_path / "cache")}  # fresh: counts what the killed run embedded
    killed = xlsearch(*args, env={**cache, CRASH_ENV: point})
    assert killed.returncode == -9, killed.stderr
    # the previous version still loads and answers
    hits = xlsearch_json("query", "weather", "--index", index_dir)["hits"]
    assert {h["id"] for h in hits} <= {r["id"] for r in DEMO_ROWS[:40]}
    assert xlsearch("verify", "--index", index_dir).returncode == 0
    rerun = xlsearch(*args, env=cache)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["embedded"] + summary["from_cache"] == 120
    if point == "embedding":  # killed after its first window of 64: those are not embedded again
        assert summary["from_cache"] == 64
    else:
        assert summary["embedded"] == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".index.") and not p.name.endswith(".lock")]
    clean = tmp_path / "clean"
    assert xlsearch("index", new, "--index", clean).returncode == 0
    assert_same_index(index_dir, clean)


def test_a_build_killed_inside_one_long_document_resumes_from_its_chunks(tmp_path):
    # every demo sentence in one document: a few hundred chunks of at most 100 characters
    text = "\n".join(row["text"] for row in DEMO_ROWS)
    corpus = write_corpus(tmp_path / "long.jsonl", [{"id": "long", "lang": "en", "text": text}])
    args = ["index", corpus, "--index", tmp_path / "index", "--chunk-size", "100", "--batch-size", "16",
            "--concurrency", "1", "--format", "json"]
    cache = {"XLSEARCH_CACHE_DIR": str(tmp_path / "cache")}
    killed = xlsearch(*args, env={**cache, CRASH_ENV: "embedding"})
    assert killed.returncode == -9, killed.stderr
    rerun = xlsearch(*args, env=cache)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    # killed after the document's first 64 chunks: those are cached, the rest embedded now
    assert summary["vectors"] > 200 and summary["from_cache"] == 64
    assert summary["embedded"] + summary["from_cache"] == summary["vectors"]


def test_a_second_writer_fails_fast_naming_the_holder(corpora, tmp_path):
    old, _ = corpora
    index_dir = tmp_path / "index"
    with writer_lock(index_dir):
        result = xlsearch("index", old, "--index", index_dir)
    assert_clean_failure(result, "is being written by another process", f'"pid": {os.getpid()}', code=1)
    assert xlsearch("index", old, "--index", index_dir).returncode == 0


def test_verify_finds_corruption_and_loading_refuses_a_damaged_index(corpora, tmp_path):
    old, _ = corpora
    index_dir = tmp_path / "index"
    assert xlsearch("index", old, "--index", index_dir).returncode == 0
    assert xlsearch_json("verify", "--index", index_dir)["ok"] is True
    vectors = bytearray((index_dir / "vectors.npy").read_bytes())
    vectors[-5] ^= 0xFF  # same size, different content
    (index_dir / "vectors.npy").write_bytes(bytes(vectors))
    result = xlsearch("verify", "--index", index_dir)
    assert result.returncode == 1 and "vectors.npy: sha256" in result.stderr
    intact = tmp_path / "intact"
    shutil.copytree(index_dir, intact)
    with open(index_dir / "index.faiss", "ab") as handle:
        handle.write(b"garbage")
    assert_clean_failure(xlsearch("query", "x", "--index", index_dir), "index.faiss has", "the manifest says")
    (intact / "meta.parquet").unlink()
    assert_clean_failure(xlsearch("query", "x", "--index", intact), "meta.parquet is missing")


def test_append_upsert_and_delete_match_a_build_from_scratch(corpora, tmp_path):
    old, new = corpora
    index_dir = tmp_path / "index"
    assert xlsearch("index", old, "--index", index_dir).returncode == 0
    changed = dict(DEMO_ROWS[5], text="This document was rewritten: the library now opens at nine.")
    update = write_corpus(tmp_path / "update.jsonl", [changed] + DEMO_ROWS[100:140])
    appended = xlsearch_json("index", update, "--index", index_dir, "--append")
    assert appended["indexed"] == 80  # 40 old (one replaced) + 40 new
    gone = [DEMO_ROWS[0]["id"], DEMO_ROWS[120]["id"]]
    deleted = xlsearch_json("delete", "--index", index_dir, "--id", gone[0], "--id", gone[1], "--id", "no-such-id")
    assert deleted["removed"] == gone and deleted["not_found"] == ["no-such-id"] and deleted["documents"] == 78
    final_rows = [changed if r["id"] == changed["id"] else r for r in DEMO_ROWS[:40] + DEMO_ROWS[100:140] if r["id"] not in gone]
    scratch = tmp_path / "scratch"
    assert xlsearch("index", write_corpus(tmp_path / "final.jsonl", final_rows), "--index", scratch).returncode == 0
    assert_same_index(index_dir, scratch)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["count"] == manifest["documents"] == 78
    assert sum(manifest["languages"].values()) == 78
    for query in ("weather", "library opening hours", "배터리"):
        ours = xlsearch_json("query", query, "--index", index_dir, "-k", "5")["hits"]
        theirs = xlsearch_json("query", query, "--index", scratch, "-k", "5")["hits"]
        assert [h["id"] for h in ours] == [h["id"] for h in theirs]
        assert [h["score"] for h in ours] == pytest.approx([h["score"] for h in theirs], abs=1e-4)
    assert_clean_failure(xlsearch("delete", "--index", index_dir), "--id")


def mutations(rng: random.Random, good: bytes) -> list[tuple[str, bytes]]:
    """Damaged corpora of every format: truncated, wrong encoding, random bytes, wrong field types."""
    text = good.decode("utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    cases = []
    for _ in range(30):
        cut = rng.randrange(1, len(good))
        cases += [("truncated.jsonl", good[:cut]), ("garbage.jsonl", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))]
        noisy = bytearray(good)
        for _ in range(rng.randrange(1, 20)):
            noisy[rng.randrange(len(noisy))] = rng.randrange(256)
        cases.append(("flipped.jsonl", bytes(noisy)))
        row = dict(rng.choice(rows))
        field = rng.choice(["text", "id", "lang"])
        row[field] = rng.choice([None, 42, 3.5, [], {}, True, "", " ", "xx", "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")])
        cases.append(("types.jsonl", (json.dumps(row) + "\n").encode()))
        cases.append(("latin1.txt", rng.choice(rows)["text"].encode("utf-8")[: rng.randrange(1, 40)] + b"\xe9\xff\n"))
        cases.append(("cut.csv", b"id,lang,text\n" + good[: rng.randrange(1, 200)]))
        cases.append(("bad.json", good[: rng.randrange(1, len(good))]))
        cases.append(("fake.parquet", good[: rng.randrange(1, 300)]))
    cases.append(("huge.txt", ("word " * 4000 + "\n").encode()))
    cases.append(("empty.jsonl", b""))
    cases.append(("blank.txt", b"\n \n\t\n"))
    return cases


@pytest.mark.slow
def test_fuzzed_corpora_exit_0_or_2_without_traceback_or_partial_index(tmp_path):
    rng = random.Random(7)
    good = (DEMO_CORPUS / "demo.jsonl").read_bytes()[:1500].rsplit(b"\n", 1)[0] + b"\n"
    runner = CliRunner()
    outcomes = {0: 0, 2: 0}
    for n, (name, content) in enumerate(mutations(rng, good)):
        case = tmp_path / f"case{n}"
        case.mkdir()
        corpus = case / name
        corpus.write_bytes(content)
        out = case / "index"
        # catch_exceptions=False: any exception escaping the command fails this test with its traceback
        result = runner.invoke(app, ["index", str(corpus), "--index", str(out)], catch_exceptions=False)
        assert result.exit_code in (0, 2), (name, content[:200], result.output)
        outcomes[result.exit_code] += 1
        if result.exit_code == 2:
            leftovers = {p.name for p in case.iterdir()} - {name, ".index.lock"}  # the lock file stays, empty of meaning
            assert not leftovers, (name, leftovers)
            assert result.output.strip().splitlines()[-1].startswith("error:")
        else:
            assert xlsearch_json("verify", "--index", out)["ok"] if n % 40 == 0 else (out / "manifest.json").is_file()
    assert outcomes[0] > 20 and outcomes[2] > 50, outcomes
    print("fuzz outcomes", outcomes)


def test_a_full_disk_fails_clearly_and_keeps_the_previous_version(corpora, tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes writing index files fail with EFBIG,
    as a full disk fails them with ENOSPC."""
    import resource
    import signal
    import subprocess
    import sys

    old, new = corpora
    index_dir = tmp_path / "index"
    assert xlsearch("index", old, "--index", index_dir).returncode == 0
    before = (index_dir / "manifest.json").read_text()

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write() instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run([sys.executable, "-m", "xlsearch", "index", str(new), "--index", str(index_dir), "--no-cache"],
                            capture_output=True, text=True, preexec_fn=small_files, cwd=os.getcwd())
    assert_clean_failure(result, f"cannot write index {index_dir}:", "File too large", "previous version is unchanged", code=1)
    assert (index_dir / "manifest.json").read_text() == before
    assert xlsearch("verify", "--index", index_dir).returncode == 0
    assert not [p for p in tmp_path.iterdir() if ".new-" in p.name]


def test_a_searcher_opened_before_a_rebuild_keeps_answering_from_the_old_version(corpora, tmp_path, local_embedder):
    from xlsearch.engine.search import Searcher
    from xlsearch.engine.store.reader import IndexReader

    old, new = corpora
    index_dir = tmp_path / "index"
    assert xlsearch("index", old, "--index", index_dir).returncode == 0
    searcher = Searcher(IndexReader(index_dir), local_embedder)
    before = [h.id for h in searcher.search(["weather"], k=5)[0]]
    assert xlsearch("index", new, "--index", index_dir).returncode == 0  # replaces the directory
    assert [h.id for h in searcher.search(["weather"], k=5)[0]] == before
    assert set(before) <= {r["id"] for r in DEMO_ROWS[:40]}
    fresh = Searcher(IndexReader(index_dir), local_embedder)
    assert {h.id for h in fresh.search(["weather"], k=5)[0]} <= {r["id"] for r in DEMO_ROWS[100:220]}
