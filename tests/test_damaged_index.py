"""Damaged index files, fuzzed: random bytes at random offsets, truncation, growth, deletion and swaps of
files between two versions, each on a fresh copy of a tiny real index. Through the library (300 cases)
opening, searching, reading a document and verifying either work or raise an XLSearchError, never
anything else; `verify` names the damaged file. Through the CLI (a dozen), `query`, `info` and `verify`
exit with one line and no traceback."""

import json
import random
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from testkit.indexes import write_jsonl
from tests.conftest import DEMO_CORPUS
from xlsearch import Index
from xlsearch.cli.app import app
from xlsearch.engine.apps.documents import read_document
from xlsearch.engine.errors import XLSearchError
from xlsearch.engine.search import Searcher
from xlsearch.engine.store.manifest import file_sha256
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.verify import verify_index

DEMO_ROWS = [json.loads(line) for line in (DEMO_CORPUS / "demo.jsonl").read_text(encoding="utf-8").splitlines()]
# 20 documents a language at least: language statistics are fitted, so languages.npz is there to damage
LANGS = ("en", "zh", "ja")
A_ROWS = [r for lang in LANGS for r in [r for r in DEMO_ROWS if r["lang"] == lang][:20]]
B_ROWS = [r for lang in LANGS for r in [r for r in DEMO_ROWS if r["lang"] == lang][-25:]]
LIBRARY_CASES = 300
# Damage a file's checksum shows: verify must name the file
PLAIN = ("bytes", "truncate", "extend", "delete", "swap")
# Damage with the manifest's checksum and size rewritten to match, as a buggy writer would leave it: only
# the parsers stand between it and a crash, so they must fail cleanly (or read it as data)
CONSISTENT = ("consistent_bytes", "consistent_truncate")



@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two tiny real indexes (margin-ranked, language-neutral): A (60 documents) to damage, B (75) to swap
    files from."""
    root = tmp_path_factory.mktemp("damaged")
    for name, rows in (("A", A_ROWS), ("B", B_ROWS)):
        Index.build([write_jsonl(root / f"{name}.jsonl", rows)], root / name)
    return root / "A", root / "B"


@pytest.fixture(scope="module")
def query_vector(local_embedder):
    return local_embedder.embed_queries(["weather walk park"])


def damage(rng: random.Random, index, other, kind: str, name: str) -> None:
    path = index / name
    data = bytearray(path.read_bytes())
    if kind in ("bytes", "consistent_bytes"):
        offset = rng.randrange(len(data))
        for i in range(offset, min(len(data), offset + rng.randint(1, 16))):
            data[i] ^= rng.randint(1, 255)  # never 0: each byte changes
    elif kind in ("truncate", "consistent_truncate"):
        data = data[:rng.randrange(len(data))]
    elif kind == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "swap":
        data = bytearray((other / name).read_bytes())
    if kind == "delete":
        path.unlink()
    else:
        path.write_bytes(bytes(data))
    if kind in CONSISTENT:
        manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
        manifest["checksums"][name], manifest["sizes"][name] = file_sha256(path), len(data)
        (index / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def cases(rng: random.Random, index, count: int):
    names = sorted(p.name for p in index.iterdir())
    data_files = [n for n in names if n != "manifest.json"]
    for n in range(count):
        name = rng.choice(names)
        kinds = PLAIN + CONSISTENT if name != "manifest.json" else PLAIN
        yield n, rng.choice(kinds), name
    assert "neighbourhood.npy" in data_files and "languages.npz" in data_files  # margin and neutral: every file


def test_damaged_files_through_the_library_fail_as_xlsearch_errors_naming_the_file(versions, query_vector, tmp_path):
    index, other = versions
    rng = random.Random(17)
    outcomes = {"refused at open": 0, "searched": 0}
    for n, kind, name in cases(rng, index, LIBRARY_CASES):
        case = tmp_path / f"case{n}"
        shutil.copytree(index, case)
        damage(rng, case, other, kind, name)
        where = (n, kind, name)
        try:
            reader = IndexReader(case)
        except XLSearchError as exc:
            assert "\n" not in str(exc), where
            outcomes["refused at open"] += 1
        else:
            try:
                searcher = Searcher(reader)
                searcher.rank(query_vector, k=5)
                searcher.rank(query_vector, k=3, langs="ja,zh")
                read_document(reader, A_ROWS[3]["id"])
                outcomes["searched"] += 1
            except XLSearchError:
                pass
        try:
            problems = verify_index(case)
        except XLSearchError:
            assert name == "manifest.json", where  # only an unreadable manifest stops verify itself
            continue
        if kind in PLAIN and name != "manifest.json":
            assert problems and name in problems[0], (where, problems)
        shutil.rmtree(case)
    assert outcomes["refused at open"] > LIBRARY_CASES // 2, outcomes
    print(outcomes)


@pytest.mark.parametrize("kind, name", [
    ("bytes", "index.faiss"), ("truncate", "meta.parquet"), ("swap", "languages.npz"), ("bytes", "neighbourhood.npy"),
])
def test_damaged_files_through_the_cli_give_one_line(versions, tmp_path, kind, name):
    index, other = versions
    case = tmp_path / "case"
    shutil.copytree(index, case)
    damage(random.Random(5), case, other, kind, name)
    runner = CliRunner()
    for command, code in (("query", 2), ("info", 2), ("verify", 1)):
        args = [command, "x"] if command == "query" else [command]
        # catch_exceptions=False: an exception escaping the command fails the test with its traceback
        result = runner.invoke(app, [*args, "--index", str(case)], catch_exceptions=False)
        lines = result.output.strip().splitlines()
        assert result.exit_code == code and len(lines) == 1 and name in lines[0], (command, result.output)
        assert "Traceback" not in result.output


def test_info_and_query_refuse_missing_and_truncated_files(versions, tmp_path):
    index, _ = versions
    truncated, missing = tmp_path / "truncated", tmp_path / "missing"
    for case in (truncated, missing):
        shutil.copytree(index, case)
    with open(truncated / "vectors.npy", "r+b") as handle:
        handle.truncate(1000)
    (missing / "index.faiss").unlink()
    with pytest.raises(XLSearchError, match="vectors.npy has 1000 bytes, the manifest says"):
        Index.open(truncated).info
    with pytest.raises(XLSearchError, match="index.faiss is missing"):
        Index.open(missing)
    assert verify_index(missing) == ["index.faiss is missing"]
    assert np.asarray(IndexReader(index).raw_vectors()).shape == (60, 384)
