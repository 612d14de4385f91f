"""Index versions under a live reader, in-process: a reader answers from its version whole whatever is
published meanwhile, switches whole when asked (refresh), opens without failing while a writer publishes
in a loop, and a symlink to an index shares the real path's writer lock. And queries that cannot be
answered: empty ones, languages the index has none of."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from testkit.indexes import publish_copy, write_jsonl
from tests.conftest import DEMO_CORPUS, ROOT
from xlsearch import Index, IndexSettings
from xlsearch.cli.app import app
from xlsearch.engine.errors import IndexMismatchError, InputError
from xlsearch.engine.search import Searcher
from xlsearch.engine.store.publish import CRASH_ENV, IndexBusyError, release_old_versions, writer_lock
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.verify import verify_index

WEATHER_QUERY = "weather walk park"
DEMO_ROWS = [json.loads(line) for line in (DEMO_CORPUS / "demo.jsonl").read_text(encoding="utf-8").splitlines()]
A_ROWS, B_ROWS = DEMO_ROWS[:160], DEMO_ROWS[160:240]  # 20 and 10 documents in each of 8 languages
# approximate (HNSW): a language filter is answered by an exact scan of the raw vectors, which is where an
# old reader used to read the newest version's vectors.npy by path
HNSW = IndexSettings(index_type="hnsw")



@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two versions of an index, A (160 documents) and B (another 80), each built once."""
    root = tmp_path_factory.mktemp("versions")
    built = {}
    for name, rows in (("A", A_ROWS), ("B", B_ROWS)):
        Index.build([write_jsonl(root / f"{name}.jsonl", rows)], root / name, settings=HNSW)
        built[name] = root / name
    return built



def ids(hits) -> list[str]:
    return [h.id for h in hits]


def test_a_reader_answers_from_its_version_whole_until_it_switches_whole(versions, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(versions["A"], path)
    index = Index.open(path)
    before = index.search(WEATHER_QUERY, k=5, lang="ja")
    before_all = index.search(WEATHER_QUERY, k=5)
    version_a = index.reader.version
    unread = IndexReader(path)  # opened, none of its segment files read yet (they are when first needed)
    publish_copy(versions["B"], path)  # the directory it was opened from is moved aside, kept for its readers
    assert len(list(tmp_path.glob(".index.old-*"))) == 1
    assert set(unread.column("doc_id")) == {row["id"] for row in A_ROWS}
    after = index.search(WEATHER_QUERY, k=5, lang="ja")
    assert ids(after) == ids(before) and [h.score for h in after] == pytest.approx([h.score for h in before])
    assert ids(index.search(WEATHER_QUERY, k=5)) == ids(before_all)
    assert index.reader.vectors(np.array([0])).shape == (1, 384)  # its own vectors, still readable

    assert index.refresh() is True and index.refresh() is False
    assert index.reader.version != version_a and index.info.documents == 80
    b_ids = {r["id"] for r in B_ROWS}
    switched = index.search(WEATHER_QUERY, k=5, lang="ja")
    assert {h.lang for h in switched} == {"ja"} and set(ids(switched)) <= b_ids
    fresh = Searcher(IndexReader(versions["B"]), index.embedder).search([WEATHER_QUERY], k=5, langs="ja")[0]
    assert ids(switched) == ids(fresh)
    # its last reader gone (the index switched, `unread` dropped), the next write removes the old version
    del unread
    publish_copy(versions["A"], path)
    assert len(list(tmp_path.glob(".index.old-*"))) == 1  # B, which `index` now reads; A's is gone
    held = next(tmp_path.glob(".index.old-*"))
    assert IndexReader(held / "index").manifest.documents == 80



@pytest.mark.processes
def test_a_publish_killed_between_its_renames_is_undone_to_its_own_version_beside_one_a_reader_holds(versions, tmp_path):
    """A held version stays aside; a publish killed after moving the current one aside leaves two there.
    Readers meanwhile, and the next writer's recovery, take the newer one: the version that was current."""
    path = tmp_path / "index"
    shutil.copytree(versions["A"], path)
    held = IndexReader(path)
    publish_copy(versions["B"], path)  # A kept aside for `held`
    code = (f"from pathlib import Path; from testkit.indexes import publish_copy; "
            f"publish_copy(Path({str(versions['A'])!r}), Path({str(path)!r}))")
    killed = subprocess.run([sys.executable, "-c", code], env={**os.environ, CRASH_ENV: "publish"}, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL and not path.exists()
    assert len(list(tmp_path.glob(".index.old-*"))) == 2
    assert IndexReader(path).manifest.documents == 80  # B, found aside
    # a reader letting go of versions without the writer lock keeps B (the index, for now) and an empty
    # directory aside (what a live publish's looks like before its first rename); the writer's recovery doesn't
    publishing = tmp_path / f".index.old-{time.time_ns():020d}-live"
    publishing.mkdir()
    release_old_versions(path)
    assert len(list(tmp_path.glob(".index.old-*"))) == 3 and IndexReader(path).manifest.documents == 80
    with writer_lock(path):
        pass
    assert path.is_dir() and IndexReader(path).manifest.documents == 80 and not publishing.exists()
    assert held.manifest.documents == 160 and len(held.column("doc_id")) == held.manifest.count

def test_a_version_that_cannot_be_opened_is_refused_once_and_the_current_one_kept(versions, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(versions["A"], path)
    index = Index.open(path)
    version_a = index.reader.version
    damaged = tmp_path / "damaged"
    shutil.copytree(versions["B"], damaged)
    with open(damaged / "neighbourhood.npy", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff" * 8)
    publish_copy(damaged, path)
    with pytest.raises(IndexMismatchError, match="neighbourhood.npy: sha256 .* the file is damaged"):
        index.refresh()
    assert index.refresh() is False and index.reader.version == version_a  # passed over, not tried again
    assert index.search(WEATHER_QUERY, k=3)
    publish_copy(versions["B"], path)
    assert index.refresh() is True and index.info.documents == 80


def test_opening_while_a_writer_publishes_in_a_loop_never_fails_or_mixes(versions, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(versions["A"], path)
    expected = {IndexReader(versions[name]).version: count for name, count in (("A", 160), ("B", 80))}
    stop = threading.Event()
    published, writer_failed = [], []

    def writer() -> None:
        try:
            while not stop.is_set():
                publish_copy(versions["B" if len(published) % 2 == 0 else "A"], path)
                published.append(1)
        except Exception as exc:
            writer_failed.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=writer)
    thread.start()
    opens, failures = 0, []
    try:
        # whichever thread the machine favours; a writer that failed ends the loop (and fails the test below)
        while thread.is_alive() and (len(published) < 40 or opens + len(failures) < 40):
            try:
                reader = IndexReader(path)
            except Exception as exc:  # any failure at all is what this test counts
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            opens += 1
            # whole: the manifest, FAISS, the metadata and the vectors of one and the same version
            assert expected[reader.version] == len(reader) == reader.index.ntotal == len(reader.column("doc_id"))
            assert reader.raw_vectors().shape == (len(reader), 384)
            if opens % 10 == 0:
                assert verify_index(path) == []
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:5]
    assert not writer_failed, writer_failed
    print(f"{opens} opens across {len(published)} publishes")


@pytest.mark.processes
def test_readers_letting_go_of_versions_never_turn_a_writer_away(versions, tmp_path):
    """Readers that switch remove the versions they let go without taking the writer lock: when they took
    it, however briefly, a writer that came at that moment was refused as busy (17 of 100 publishes beside
    three readers; a server switching under the serve test's publisher left it hanging in CI)."""
    path = tmp_path / "index"
    shutil.copytree(versions["A"], path)
    done = tmp_path / "done"
    code = (f"from pathlib import Path; from xlsearch import Index; index = Index.open(Path({str(path)!r})); "
            f"print('reading', flush=True); switches = 0\n"
            f"while not Path({str(done)!r}).exists(): switches += index.refresh()\n"
            f"print(switches)")
    readers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
               for _ in range(3)]
    refused = []
    try:
        assert all(reader.stdout.readline() == "reading\n" for reader in readers)
        for n in range(100):
            try:
                publish_copy(versions["B" if n % 2 == 0 else "A"], path)
            except IndexBusyError as exc:
                refused.append(str(exc))
    finally:
        done.touch()
        switches = [int(reader.communicate(timeout=60)[0]) for reader in readers]
    assert not refused, (len(refused), refused[0])
    assert all(switches), switches
    # their last versions let go when they ended: the next write finds nothing aside
    publish_copy(versions["A"], path)
    assert [p.name for p in tmp_path.glob(".index.old-*/index")] == []


def test_a_symlink_to_an_index_shares_its_lock_and_stays_a_link(versions, tmp_path):
    real = tmp_path / "real"
    shutil.copytree(versions["B"], real)
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    victim = B_ROWS[0]["id"]
    with writer_lock(real):
        with pytest.raises(IndexBusyError, match=f'"pid": {os.getpid()}'):
            Index.open(alias).delete([victim])
    deletion = Index.open(alias).delete([victim])
    assert deletion.removed == [victim]
    assert alias.is_symlink() and Index.open(real).info.documents == 79
    assert sorted(p.name for p in tmp_path.iterdir()) == [".real.lock", "alias", "real"]


def test_empty_queries_and_languages_the_index_lacks_are_input_errors(versions):
    index = Index.open(versions["B"])
    for query in ("", "   ", "\u200b\u2060"):
        with pytest.raises(InputError, match="^the query is empty$"):
            index.search(query)
    with pytest.raises(InputError, match="^query 2 of 2 is empty$"):
        index.search(["weather", "\u200b"])
    with pytest.raises(InputError) as absent:
        index.search("weather", lang="ar")
    assert absent.value.field == "lang" and "the index has no documents in ar (it has " in str(absent.value)
    runner = CliRunner()
    for args, line in ((["query", ""], "error: the query is empty"),
                       (["query", "weather", "--lang", "ar"], "error: --lang 'ar': the index has no documents in ar")):
        result = runner.invoke(app, [*args, "--index", str(versions["B"])], catch_exceptions=False)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(line), result.output
