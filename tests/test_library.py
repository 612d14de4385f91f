"""The library, in-process: xlsearch.Index over the real model, real files and real FAISS, no subprocess.
The fast tier (`make test-fast`) is this module and the others' tests not marked `processes`."""

import json
import shutil

import numpy as np
import pytest

import xlsearch
from tests.conftest import DEMO_CORPUS
from xlsearch import EmbedderSpec, Index, IndexSettings
from xlsearch.engine.errors import IndexMismatchError, InputError

WEATHER_QUERY = "今天天气真好，适合出去散步"


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> EmbedderSpec:
    return EmbedderSpec(cache=tmp_path_factory.mktemp("cache") / "embeddings.sqlite", api_key="never-on-disk")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, spec) -> Index:
    path = tmp_path_factory.mktemp("library") / "demo"
    Index.build([DEMO_CORPUS], path, spec)
    with Index.open(path) as opened:
        yield opened


def test_search_finds_the_translations_and_filters_by_language(demo):
    hits = demo.search(WEATHER_QUERY, k=8)
    assert isinstance(hits, list) and all(isinstance(h, xlsearch.Hit) for h in hits)
    assert sum(h.id.startswith("weather-walk-") for h in hits) >= 6
    assert [h.rank for h in hits] == list(range(1, 9))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))  # margin order
    assert all(h.cosine is not None for h in hits)  # the cosine behind each margin
    japanese = demo.search(WEATHER_QUERY, k=20, lang="jpn,ko-KR")
    assert len(japanese) == 20 and {h.lang for h in japanese} == {"ja", "ko"}
    several = demo.search([WEATHER_QUERY, "train delayed"], k=1, lang=["fr"])
    assert [hits[0].id for hits in several] == ["weather-walk-fr", "train-delay-fr"]


def test_info_is_the_typed_manifest_and_the_key_never_reaches_disk(demo):
    info = demo.info
    assert isinstance(info, xlsearch.Manifest) and info.format_version == 4
    assert (info.documents, info.count, info.dim, info.model) == (360, 360, 384, "multilingual-e5-small-q4")
    assert info.embedder.backend == "local" and info.embedder.api_key is None
    assert info.settings == IndexSettings() and info.index["kind"] == "flat"
    assert "never-on-disk" not in (demo.path / "manifest.json").read_text()


def test_append_delete_and_verify_rewrite_versions_without_re_embedding(demo, spec, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(demo.path, path)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "weather-walk-en", "lang": "en", "text": "A sunny day for a walk by the river."})
                     + "\n" + json.dumps({"id": "lighthouse-en", "lang": "en", "text": "The lighthouse keeper lit the lamp."})
                     + "\n", encoding="utf-8")
    with Index.open(path, spec) as index:
        appended = index.append([extra])
        assert appended.embedded == 2 and index.info.documents == 361  # one replaced, one new
        assert index.search("river walk on a sunny day", k=1, lang="en")[0].text.startswith("A sunny day")
        deletion = index.delete(["lighthouse-en", "no-such-id"])
        assert (deletion.removed, deletion.not_found, index.info.documents) == (["lighthouse-en"], ["no-such-id"], 360)
        assert index.verify() == []


def test_an_index_of_the_previous_format_is_migrated_and_an_older_one_refused(demo, tmp_path):
    path = tmp_path / "v2"
    shutil.copytree(demo.path, path)
    manifest = json.loads((path / "manifest.json").read_text())
    embedder = manifest.pop("embedder")
    manifest.update(format_version=2, backend=embedder["backend"], requested_dim=None, index_type=manifest["index"]["key"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(path) as migrated:
        assert migrated.info.embedder.backend == "local" and migrated.info.settings == demo.info.settings
        assert [h.id for h in migrated.search(WEATHER_QUERY, k=5)] == [h.id for h in demo.search(WEATHER_QUERY, k=5)]
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="index format version 1; .* rebuild it with `xlsearch index`"):
        Index.open(path)


def test_errors_name_the_parameter_and_value_in_the_library_s_terms(tmp_path):
    with pytest.raises(InputError) as missing:
        Index.open(tmp_path / "nowhere")
    assert (missing.value.field, missing.value.value) == ("index", tmp_path / "nowhere")
    assert str(missing.value) == f"index {tmp_path / 'nowhere'}: no such index directory"
    with pytest.raises(InputError) as storage:
        IndexSettings(storage="fp8")
    assert str(storage.value) == "storage 'fp8': expected one of float32, float16, sq8"
    assert storage.value.render(lambda field: "--" + field) == "--storage 'fp8': expected one of float32, float16, sq8"


def test_the_plan_is_chosen_once_from_the_chunk_count_and_refused_before_any_embedding(tmp_path, spec):
    corpus = tmp_path / "long.jsonl"
    sentences = " ".join(f"Sentence number {i} says something about the weather." for i in range(60))
    corpus.write_text(json.dumps({"id": "long", "lang": "en", "text": sentences}) + "\n", encoding="utf-8")
    plans, embedders, steps = [], [], []
    built = Index.build([corpus], tmp_path / "index", spec, chunk_size=200, on_plan=plans.append,
                        on_embedder=embedders.append, progress=lambda done, total: steps.append((done, total)))
    assert built.manifest.count > 10 and plans[0].estimated_bytes == built.manifest.count * 384 * 4
    # one document, many chunks: progress counts chunks against the planned count
    assert steps[-1] == (built.manifest.count, built.manifest.count)
    assert built.manifest.index["key"] == plans[0].key
    with pytest.raises(InputError, match="over the memory budget") as refused:
        Index.build([corpus], tmp_path / "small", spec, chunk_size=200, settings=IndexSettings(max_memory=1024),
                    on_embedder=embedders.append)
    assert refused.value.field == "index_type"
    assert embedders[-1].cache_use == (0, 0) and not (tmp_path / "small").exists()  # nothing embedded


def test_a_cosine_ranked_index_scores_by_cosine(tmp_path, spec):
    path = tmp_path / "cosine"
    Index.build([DEMO_CORPUS], path, spec, settings=IndexSettings(scoring="cosine"))
    with Index.open(path) as index:
        hits = index.search(WEATHER_QUERY, k=5)
        assert all(h.cosine is None for h in hits) and hits[0].id.startswith("weather-walk-")
        vectors = index.reader.vectors(np.array([0, 1]))
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_an_index_that_cannot_reach_the_recall_target_says_so(tmp_path, spec):
    # 32 principal components, scanned exactly: no search depth to raise, 0.617 recall@10 on the demo
    built = Index.build([DEMO_CORPUS], tmp_path / "pca", spec, settings=IndexSettings(index_type="PCA32,Flat"))
    assert built.manifest.index["below_target"] is True and built.manifest.index["recall@10"] < 0.95
    assert Index.open(tmp_path / "pca").info.index["below_target"] is True
