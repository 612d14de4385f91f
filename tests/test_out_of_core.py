"""`index --embeddings` over the memory budget: built shard by shard into an inverted file on disk, by the
real command, from Parquet shards of 20,000 vectors drawn from the mixture fitted to real embeddings
(bench.realistic_vectors). It must answer as the in-memory build of the same vectors and index answers,
take appends and deletes without writing a published file, and survive SIGKILL at the merge."""

import json
import os
import shutil
from collections import Counter

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.gpu_index import PROVENANCE, synthetic_corpus
from bench.realistic_vectors import SHIPPED_MIXTURE, FittedMixture
from testkit.indexes import write_jsonl
from tests.conftest import assert_clean_failure, xlsearch, xlsearch_json
from xlsearch.engine.ann.faiss_index import resolve_device, search
from xlsearch.engine.ann.gpu import probe_gpu
from xlsearch.engine.ann.index_types import parse_bytes, plan_for
from xlsearch.engine.ann.on_disk import merged_on_disk, open_on_disk, read_partial
from xlsearch.engine.store.files import NEIGHBOUR_ROWS_FILE
from xlsearch.engine.store.publish import CRASH_ENV
from xlsearch.engine.store.out_of_core import Shard, write_index_out_of_core
from xlsearch.engine.store.reader import IndexReader
from xlsearch.engine.store.settings import IndexSettings
from xlsearch.engine.store.writer import plan_index, write_index

pytestmark = pytest.mark.processes

ROWS, SHARDS = 12_000, 4
# raw vectors 18.4 MB: every budget puts them on disk; 8 MB holds 8-bit codes (4.4 MB), 3 MB 4-bit codes
# (2.2 MB), 2 MB neither (then product quantisation)
SQ8_BUDGET, SQ4_BUDGET, PQ_BUDGET = "8MB", "3MB", "2MB"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Four Parquet shards in two languages; every 7th row repeats an earlier document's id in a later
    chunk or shard, so duplicates are dropped as in-memory reading drops them."""
    root = tmp_path_factory.mktemp("emb")
    vectors = FittedMixture.load(SHIPPED_MIXTURE).draw(ROWS)
    per = ROWS // SHARDS
    for number in range(SHARDS):
        rows = range(number * per, (number + 1) * per)
        pq.write_table(pa.table({
            "id": [f"d{j // 2}" if j % 7 == 0 else f"d{j}" for j in rows],
            "text": [f"text {j}" for j in rows],
            "lang": ["en" if j % 2 else "de" for j in rows],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows.start:rows.stop].ravel()), 384),
        }), root / f"shard-{number}.parquet")
    return root


def built(shards, index, *options):
    done = xlsearch("index", "--embeddings", str(shards), "--index", str(index), "--format", "json", *options)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), done.stderr  # stdout is the summary alone: the merge's prints kept off it


@pytest.fixture(scope="module")
def on_disk_build(shards, tmp_path_factory):
    """An index built on disk with 8-bit codes, with the build's summary and log; tests that change it work
    on a copy."""
    index = tmp_path_factory.mktemp("on-disk") / "index"
    return index, *built(shards, index, "--max-memory", SQ8_BUDGET)


@pytest.fixture(scope="module")
def on_disk(on_disk_build):
    return on_disk_build[0]


def copy_of(index, tmp_path):
    shutil.copytree(index, tmp_path / "index")
    return tmp_path / "index"


@pytest.mark.slow
@pytest.mark.parametrize("budget, key", [(SQ8_BUDGET, "SQ8"), (SQ4_BUDGET, "SQ4"), (PQ_BUDGET, "PQ48")])
def test_on_disk_and_in_memory_builds_answer_alike(shards, request, tmp_path, budget, key):
    if budget == SQ8_BUDGET:  # the module's own build: the same command
        disk_path, summary, log = request.getfixturevalue("on_disk_build")
    else:
        disk_path = tmp_path / "disk"
        summary, log = built(shards, disk_path, "--max-memory", budget)
    assert "on disk: the vectors do not fit the memory budget" in log and key in log
    disk = IndexReader(disk_path)
    assert disk.manifest.index["on_disk"] and len(disk.manifest.segments) == SHARDS
    assert summary["skipped"] == {"duplicate id": summary["vectors"] and ROWS - summary["vectors"]}
    # the same inverted file in memory: the factory string of the plan it chose, no budget
    built(shards, tmp_path / "memory", "--index-type", disk.manifest.index["key"])
    memory = IndexReader(tmp_path / "memory")
    assert "on_disk" not in memory.manifest.index and (memory.manifest.count, memory.manifest.documents) == (
        disk.manifest.count, disk.manifest.documents)
    assert disk.manifest.languages == memory.manifest.languages
    assert disk.manifest.index["params"] == memory.manifest.index["params"]
    queries = FittedMixture.load(SHIPPED_MIXTURE, seed=1).draw(50)
    lists = faiss.extract_index_ivf(disk.index).nlist
    every_list = {"nprobe": lists}
    assert np.array_equal(search(disk.index, queries, 10, every_list)[1], search(memory.index, queries, 10, every_list)[1])
    assert np.array_equal(disk.search(queries, 10)[1], memory.search(queries, 10)[1])
    np.testing.assert_allclose(disk.neighbourhoods, memory.neighbourhoods, atol=1e-6)
    assert xlsearch("verify", "--index", str(disk_path)).returncode == 0



@pytest.mark.skipif(not probe_gpu().usable, reason="no usable GPU")
def test_on_a_gpu_the_out_of_core_neighbourhoods_are_the_in_memory_ones(tmp_path):
    """On a GPU both writers search neighbourhoods exactly there: the same neighbours, the same values.
    Engine calls, not the command: the GPU machine has no embedding model to describe."""
    vectors, meta = synthetic_corpus(ROWS)
    meta = meta.set_column(0, "doc_id", pa.array([f"d{row // 3}" for row in range(ROWS)]))  # 3 chunks a document
    settings = IndexSettings(device="gpu", max_memory=parse_bytes(SQ8_BUDGET))
    plans = plan_index(settings, ROWS, 384, resolve_device("gpu"), out_of_core=True)
    assert plans[0].on_disk
    per = ROWS // SHARDS
    write_index_out_of_core(tmp_path / "disk", (Shard(meta.slice(first, per), vectors[first:first + per], [], Counter())
                                                for first in range(0, ROWS, per)), PROVENANCE, plans, settings, device="gpu")
    write_index(tmp_path / "memory", vectors, meta, PROVENANCE, [plan_for("flat", ROWS, 384)], settings, device="gpu")
    disk, memory = IndexReader(tmp_path / "disk"), IndexReader(tmp_path / "memory")
    assert disk.manifest.index["neighbourhoods_exact"] and memory.manifest.index["neighbourhoods_exact"]
    # the same neighbours, but where two of a row's cosines are closer than the GPU's rounding across
    # batch shapes (1e-7), which may fall either way
    disk_rows, memory_rows = (np.load(index.directory / NEIGHBOUR_ROWS_FILE) for index in (disk, memory))
    assert (np.sort(disk_rows, axis=1) == np.sort(memory_rows, axis=1)).all(axis=1).mean() > 0.999
    np.testing.assert_allclose(disk.neighbourhoods, memory.neighbourhoods, atol=1e-6)

def test_segments_built_on_ray_make_the_same_index(shards, on_disk, ray_address, tmp_path):
    """Ray tasks add the shards to partial indexes and search their neighbourhoods (a real local Ray,
    joined by address): the lists file and the neighbourhoods are those of the build in one process."""
    built(shards, tmp_path / "ray", "--max-memory", SQ8_BUDGET, "--ray-address", ray_address)
    here, there = IndexReader(on_disk), IndexReader(tmp_path / "ray")
    assert (there.directory / "index.ivfdata").read_bytes() == (here.directory / "index.ivfdata").read_bytes()
    # the same neighbours; their cosines the same within float rounding (3.6e-7 seen: a worker's BLAS
    # runs on one thread, the driver's on every core)
    assert np.array_equal(np.load(there.directory / NEIGHBOUR_ROWS_FILE), np.load(here.directory / NEIGHBOUR_ROWS_FILE))
    np.testing.assert_allclose(there.neighbourhoods, here.neighbourhoods, atol=1e-6)
    # under the budget nothing is made on Ray, and the build says so
    _, log = built(shards, tmp_path / "memory", "--ray-address", ray_address)
    assert "indexed in memory in this process, not on Ray" in log
    refused = xlsearch("index", str(shards), "--index", str(tmp_path / "corpus"), "--ray")
    assert_clean_failure(refused, "Ray builds an index from --embeddings", code=2)


def test_appends_and_deletes_write_new_lists_and_never_a_published_file(on_disk, tmp_path):
    index = copy_of(on_disk, tmp_path)
    first = IndexReader(index)
    published = {name: (index / name).stat().st_ino for name in first.manifest.sizes}
    digest = first.manifest.checksums["index.ivfdata"]
    corpus = tmp_path / "new.jsonl"
    write_jsonl(corpus, [{"id": "tea", "text": "I drink green tea every morning.", "lang": "en"},
                         {"id": "rain", "text": "Es regnet seit drei Tagen ohne Pause.", "lang": "de"}])
    appended = xlsearch_json("index", str(corpus), "--append", "--index", str(index))
    assert appended["vectors"] == first.manifest.count + 2
    after = IndexReader(index)
    assert after.manifest.index["on_disk"] and len(after.manifest.segments) == SHARDS + 1
    assert after.manifest.checksums["index.ivfdata"] != digest
    hits = xlsearch_json("query", "a cup of green tea", "--index", str(index), "-k", "3")["hits"]
    assert hits[0]["id"] == "tea"
    # the first version's files are as they were: an update writes new files and links the rest
    assert all(first.manifest.checksums[name] == after.manifest.checksums[name]
               for name in first.manifest.sizes if name.startswith(("meta", "vectors")))
    assert all((index / name).stat().st_ino == published[name] for name in first.manifest.sizes if name.startswith("vectors"))
    deleted = xlsearch_json("delete", "--id", "tea", "--id", "d3", "--index", str(index))
    assert sorted(deleted["removed"]) == ["d3", "tea"]
    final = IndexReader(index)
    assert final.manifest.checksums["index.ivfdata"] == after.manifest.checksums["index.ivfdata"]  # linked, not merged
    assert "tea" not in [hit["id"] for hit in xlsearch_json("query", "a cup of green tea", "--index", str(index))["hits"]]
    assert xlsearch("verify", "--index", str(index)).returncode == 0


def test_sigkill_while_merging_leaves_the_previous_version_serving(shards, on_disk, tmp_path):
    index = copy_of(on_disk, tmp_path)
    before = (index / "manifest.json").read_bytes()
    for point in ("partials", "merge"):  # a build killed with its partial indexes written, then in its merge
        killed = xlsearch("index", "--embeddings", str(shards), "--index", str(index), "--max-memory", SQ8_BUDGET,
                          env={CRASH_ENV: point})
        assert killed.returncode == -9
        assert (index / "manifest.json").read_bytes() == before
    assert xlsearch("verify", "--index", str(index)).returncode == 0
    assert len(xlsearch_json("query", "anything", "--index", str(index), "-k", "3")["hits"]) == 3
    # an append killed in its merge likewise
    corpus = tmp_path / "new.jsonl"
    write_jsonl(corpus, [{"id": "tea", "text": "I drink green tea every morning.", "lang": "en"}])
    assert xlsearch("index", str(corpus), "--append", "--index", str(index), env={CRASH_ENV: "merge"}).returncode == -9
    assert (index / "manifest.json").read_bytes() == before
    assert xlsearch("verify", "--index", str(index)).returncode == 0


def test_a_damaged_lists_file_is_named(on_disk, tmp_path):
    index = copy_of(on_disk, tmp_path)
    with open(index / "index.ivfdata", "r+b") as lists:
        lists.seek(os.path.getsize(index / "index.ivfdata") // 2)
        byte = lists.read(1)
        lists.seek(-1, 1)
        lists.write(bytes([byte[0] ^ 0xFF]))
    checked = xlsearch("verify", "--index", str(index))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "index.ivfdata: sha256" in checked.stderr and "the file is damaged" in checked.stderr


@pytest.mark.parametrize("release_bytes", [1, 64 << 20])
def test_the_merge_writes_what_faiss_merge_writes(tmp_path, release_bytes):
    """merged_on_disk lays out and fills the lists file a part at a time, dropping the pages it mapped
    (after every list with release_bytes=1): the file and the index equal FAISS's own merge of the same
    parts, one of them a whole on-disk index as an append merges it."""
    vectors = FittedMixture.load(SHIPPED_MIXTURE, seed=3).draw(6_000).astype(np.float32)
    trained = faiss.index_factory(vectors.shape[1], "IVF64,SQ8", faiss.METRIC_INNER_PRODUCT)
    trained.train(vectors)
    paths = []
    for number, start in enumerate(range(0, 4_000, 1_000)):
        part = faiss.clone_index(trained)
        part.add_with_ids(vectors[start:start + 1_000], np.arange(start, start + 1_000))
        paths.append(tmp_path / f"part-{number}.faiss")
        faiss.write_index(part, str(paths[-1]))
    first = merged_on_disk(faiss.clone_index(trained), paths, tmp_path / "first.ivfdata", release_bytes)
    faiss.write_index(first, str(tmp_path / "first.faiss"))
    published = open_on_disk(tmp_path / "first.faiss")
    added = faiss.clone_index(trained)
    added.add_with_ids(vectors[4_000:], np.arange(4_000, 6_000))
    ours = merged_on_disk(faiss.clone_index(trained), [published, added], tmp_path / "ours.ivfdata", release_bytes)

    theirs = faiss.OnDiskInvertedLists(trained.nlist, trained.code_size, str(tmp_path / "theirs.ivfdata"))
    sources = faiss.InvertedListsPtrVector()
    everything = [read_partial(path) for path in paths] + [added]
    for part in everything:
        sources.push_back(faiss.extract_index_ivf(part).invlists)
    assert theirs.merge_from_multiple(sources.data(), sources.size(), False) == ours.ntotal == 6_000
    del theirs
    assert (tmp_path / "ours.ivfdata").read_bytes() == (tmp_path / "theirs.ivfdata").read_bytes()
    whole = faiss.clone_index(trained)
    whole.add(vectors)
    ours.nprobe = whole.nprobe = 8
    assert np.array_equal(ours.search(vectors[:50], 10)[1], whole.search(vectors[:50], 10)[1])
