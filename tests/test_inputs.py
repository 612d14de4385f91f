"""Odd inputs a careless user gives, in-process through the real readers and mapper: a file in Latin-1,
the same file named three ways, texts that show nothing."""

import json

import pytest

from xlsearch.engine.errors import InputError
from xlsearch.indexer.mapper import FieldMap, MappingReport, map_records
from xlsearch.indexer.readers import read_records

LATIN1_ROWS = "id,lang,text\n1,fr,Café crème à emporter\n2,de,Grüße aus München\n3,es,Mañana será otro día\n"


def documents(corpus: str):
    report = MappingReport()
    return list(map_records(read_records(corpus), FieldMap(), report)), report


def test_a_latin1_csv_is_refused_naming_the_file_and_the_fix(tmp_path):
    corpus = tmp_path / "legacy.csv"
    corpus.write_bytes(LATIN1_ROWS.encode("latin-1"))
    with pytest.raises(InputError) as refused:
        documents(str(corpus))
    message = str(refused.value)
    assert "legacy.csv: not UTF-8" in message and "Latin-1" in message and "iconv" in message
    corpus.write_bytes(LATIN1_ROWS.encode("utf-8"))
    docs, _ = documents(str(corpus))
    assert docs[0].text == "Café crème à emporter"


def test_a_few_bad_bytes_in_utf8_are_still_replaced_and_counted(tmp_path):
    corpus = tmp_path / "mostly.jsonl"
    rows = [{"id": str(i), "lang": "fr", "text": f"Café numéro {i}"} for i in range(20)]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    corpus.write_bytes(data.replace(b"num", b"n\xffm", 5))  # 5 bad bytes among 40 good accented letters
    docs, report = documents(str(corpus))
    assert len(docs) == 20 and report.invalid_utf8 == 5


def test_ids_do_not_depend_on_how_the_path_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    corpus = tmp_path / "data" / "notes.txt"
    corpus.write_text("first line\nsecond line\n", encoding="utf-8")
    (tmp_path / "link.txt").symlink_to(corpus)
    monkeypatch.chdir(tmp_path)  # the process's working directory, as a user's shell has one
    spellings = ["data/notes.txt", "./data/notes.txt", str(corpus), "data/../data/notes.txt", "link.txt"]
    ids = {spelling: [d.id for d in documents(spelling)[0]] for spelling in spellings}
    assert all(found == ["data/notes.txt:1", "data/notes.txt:2"] for found in ids.values()), ids
    monkeypatch.chdir(tmp_path / "data")
    assert [d.id for d in documents("notes.txt")[0]] == ["notes.txt:1", "notes.txt:2"]


def test_texts_that_show_nothing_are_skipped_as_empty(tmp_path):
    corpus = tmp_path / "invisible.jsonl"
    texts = ["\u200b", "\u200b\u200c\u200d", "\ufeff \u2060", "\u00ad", " \t", "visible\u200b"]
    corpus.write_text("".join(json.dumps({"id": str(i), "lang": "en", "text": t}) + "\n" for i, t in enumerate(texts)),
                      encoding="utf-8")
    docs, report = documents(str(corpus))
    assert [d.id for d in docs] == ["5"] and report.skipped["empty text"] == 5
