"""Records to Documents: picks the text, id and language fields, keeps the rest as metadata."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from xlsearch.engine.errors import InputError
from xlsearch.engine.languages import detect_lang, normalize_lang
from xlsearch.engine.text import is_blank
from xlsearch.indexer.documents import Document, Record


@dataclass(frozen=True)
class FieldMap:
    text_field: str = "text"
    id_field: str = "id"
    lang_field: str = "lang"
    lang: str | None = None  # for records that carry no language of their own; else detected


@dataclass
class MappingReport:
    """What happened to every record, for the summary at the end of a build."""

    indexed: int = 0
    skipped: Counter = field(default_factory=Counter)
    detected_languages: int = 0
    invalid_utf8: int = 0  # documents indexed with undecodable bytes replaced by U+FFFD


def _lang_of(record: Record, fields: FieldMap, text: str, report: MappingReport) -> str:
    value = record.fields.get(fields.lang_field) or record.lang or fields.lang
    if value is None or (isinstance(value, str) and not value.strip()):
        report.detected_languages += 1
        return detect_lang(text)
    if not isinstance(value, str):
        raise InputError(f"{record.where}: field {fields.lang_field!r} must be a language code, got {value!r}")
    try:
        return normalize_lang(value)
    except InputError as exc:
        raise InputError(f"{record.where}: {exc}") from None


def map_records(records: Iterable[Record], fields: FieldMap, report: MappingReport) -> Iterator[Document]:
    """Documents in corpus order. Empty texts are skipped; a repeated id keeps its first document."""
    seen: set[str] = set()
    for record in records:
        if fields.text_field not in record.fields:
            names = ", ".join(map(str, record.fields)) or "none"
            raise InputError(f"{record.where}: no field {fields.text_field!r} (fields: {names}); choose one with `text_field`")
        text = record.fields[fields.text_field]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise InputError(f"{record.where}: field {fields.text_field!r} must be text, got {type(text).__name__}")
        if is_blank(text):  # zero-width characters included: they embed as if they said something
            report.skipped["empty text"] += 1
            continue
        raw_id = record.fields.get(fields.id_field)
        doc_id = str(raw_id) if raw_id not in (None, "") else record.where
        if doc_id in seen:
            report.skipped["duplicate id"] += 1
            continue
        seen.add(doc_id)
        if "\ufffd" in text:
            report.invalid_utf8 += 1
        lang = _lang_of(record, fields, text, report)
        taken = {fields.text_field, fields.id_field, fields.lang_field}
        extra = {k: v for k, v in record.fields.items() if k not in taken}
        report.indexed += 1
        yield Document(id=doc_id, text=text, lang=lang, source=record.source, extra=extra)
