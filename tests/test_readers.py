"""Every corpus format read from real files, mapped through the real field mapper."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xlsearch.engine.errors import InputError
from xlsearch.indexer.mapper import FieldMap, MappingReport, map_records
from xlsearch.indexer.readers import read_records

ROWS = [
    {"id": "w1", "lang": "en", "text": "It is sunny today.", "topic": "weather"},
    {"id": "w2", "lang": "ja-JP", "text": "今日は晴れです。", "topic": "weather"},
    {"id": "w3", "lang": "kor", "text": "오늘은 맑아요.", "topic": "weather"},
]


def documents(corpus, fields=FieldMap()):
    report = MappingReport()
    return list(map_records(read_records(str(corpus)), fields, report)), report


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_structured_formats_keep_ids_languages_and_extra_fields(tmp_path, fmt):
    docs, report = documents(write(tmp_path / f"corpus.{fmt}", ROWS, fmt))
    assert [d.id for d in docs] == ["w1", "w2", "w3"]
    assert [d.lang for d in docs] == ["en", "ja", "ko"]
    assert docs[1].text == "今日は晴れです。"
    assert all(d.extra == {"topic": "weather"} for d in docs)
    assert report.indexed == 3


def test_custom_field_names_and_default_language(tmp_path):
    rows = [{"key": 7, "body": "Guten Morgen"}, {"key": 8, "body": "Gute Nacht"}]
    corpus = write(tmp_path / "c.jsonl", rows, "jsonl")
    docs, _ = documents(corpus, FieldMap(text_field="body", id_field="key", lang="deu"))
    assert [(d.id, d.lang, d.text) for d in docs] == [("7", "de", "Guten Morgen"), ("8", "de", "Gute Nacht")]


def test_plain_text_is_one_document_per_line_with_detected_language(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("今天天气真好，适合出去散步\n\nThe train is late again this morning.\n", encoding="utf-8")
    docs, report = documents(corpus)
    assert [(d.id, d.lang) for d in docs] == [(f"{corpus}:1", "zh"), (f"{corpus}:3", "en")]
    assert report.skipped["empty text"] == 1
    assert report.detected_languages == 2


def test_tatoeba_files_take_their_language_from_the_suffix(tatoeba):
    docs, _ = documents(tatoeba / "tatoeba.jpn-eng.jpn")
    assert len(docs) == 1000 and {d.lang for d in docs} == {"ja"}
    english, _ = documents(tatoeba / "tatoeba.jpn-eng.eng")
    assert {d.lang for d in english} == {"en"}


def test_directories_are_read_recursively_skipping_unknown_and_hidden_files(tmp_path):
    write(tmp_path / "a.jsonl", ROWS[:1], "jsonl")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.csv", ROWS[1:], "csv")
    (tmp_path / "README.md").write_text("not a corpus")
    (tmp_path / ".hidden").mkdir()
    write(tmp_path / ".hidden" / "c.jsonl", ROWS, "jsonl")
    docs, _ = documents(tmp_path)
    assert [d.id for d in docs] == ["w1", "w2", "w3"]


def test_hugging_face_datasets_through_datasets_load_dataset(tmp_path):
    data = tmp_path / "hub_dataset"
    data.mkdir()
    write(data / "train.parquet", ROWS, "parquet")
    docs, _ = documents(f"hf:{data}")
    assert [d.id for d in docs] == ["w1", "w2", "w3"]
    assert docs[0].source.startswith("hf:")


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    corpus = tmp_path / "broken.txt"
    corpus.write_bytes("ein gültiger Satz\n".encode() + b"caf\xe9 au lait\n")
    docs, report = documents(corpus)
    assert [d.text for d in docs] == ["ein gültiger Satz", "caf\ufffd au lait"]
    assert report.invalid_utf8 == 1


def test_duplicate_ids_keep_the_first_document(tmp_path):
    rows = [{"id": "x", "text": "first", "lang": "en"}, {"id": "x", "text": "second", "lang": "en"}]
    docs, report = documents(write(tmp_path / "d.jsonl", rows, "jsonl"))
    assert [d.text for d in docs] == ["first"] and report.skipped["duplicate id"] == 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "bad.jsonl:2: invalid JSON"),
        ("list.jsonl", '["not", "an", "object"]\n', "list.jsonl:1: expected a JSON object"),
        ("notext.jsonl", '{"body": "hello"}\n', "notext.jsonl:1: no field 'text' (fields: body)"),
        ("badlang.jsonl", '{"text": "hello", "lang": "xx"}\n', "badlang.jsonl:1: unknown language code 'xx'"),
        ("numtext.jsonl", '{"text": 42}\n', "field 'text' must be text"),
        ("corpus.docx", "binary", "unknown corpus format '.docx'"),
        ("empty.jsonl", "", "empty.jsonl: empty file"),
        ("ragged.csv", 'text,id\nhello,1,extra\n', "ragged.csv:2: more values"),
        ("broken.parquet", "PAR1 not really parquet", "unreadable Parquet"),
    ],
)
def test_bad_input_names_the_file_and_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        documents(path)
    assert message in str(caught.value)


def test_missing_paths_and_empty_directories(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        documents(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="no corpus files in this directory"):
        documents(tmp_path)
