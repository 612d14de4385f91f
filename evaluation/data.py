"""Parallel data for evaluation: sentences that share a key say the same thing in different languages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.engine.languages import normalize_lang
from xlsearch.indexer.readers import read_records
from xlsearch.indexer.readers.hf import PREFIX as HF_PREFIX


@dataclass(frozen=True)
class Sentence:
    text: str
    lang: str
    key: str  # the meaning: a Tatoeba line, a JSONL pair, a demo group


@dataclass
class ParallelSet:
    name: str
    sentences: list[Sentence]

    @property
    def keys(self) -> list[str]:
        """Keys in corpus order: the held-out split takes its parts from this order."""
        return list(dict.fromkeys(s.key for s in self.sentences))


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def load_tatoeba(directory: Path, pairs: list[str]) -> list[ParallelSet]:
    """LASER's layout: tatoeba.xxx-eng.xxx aligned line by line with tatoeba.xxx-eng.eng."""
    sets = []
    for pair in pairs:
        try:
            src, tgt = pair.split("-")
        except ValueError:
            raise InputError("expected the form xxx-eng", field="pairs", value=pair) from None
        left = _lines(directory / f"tatoeba.{pair}.{src}")
        right = _lines(directory / f"tatoeba.{pair}.{tgt}")
        if len(left) != len(right):
            raise InputError(f"{directory}/tatoeba.{pair}.*: {len(left)} and {len(right)} lines are not aligned")
        sets.append(_pairs_to_set(pair, zip(left, right), normalize_lang(src), normalize_lang(tgt)))
    return sets


def _pairs_to_set(name: str, pairs, src_lang: str, tgt_lang: str) -> ParallelSet:
    sentences = []
    for row, (src, tgt) in enumerate(pairs, start=1):
        if src.strip() and tgt.strip():
            sentences += [Sentence(src, src_lang, f"{name}:{row}"), Sentence(tgt, tgt_lang, f"{name}:{row}")]
    return ParallelSet(name, sentences)


def load_records(corpus: str, default_langs: tuple[str, str] | None = None) -> ParallelSet:
    """JSONL/CSV/Parquet/hf: rows of {src, tgt, src_lang, tgt_lang} (or sentence1/sentence2, as MTEB's
    bitext sets), or documents with a `group` field (the demo corpus)."""
    sentences = []
    for record in read_records(corpus):
        fields = record.fields
        src = fields.get("src", fields.get("sentence1"))
        tgt = fields.get("tgt", fields.get("sentence2"))
        if src is not None and tgt is not None:
            src_lang = fields.get("src_lang") or (default_langs or (None, None))[0]
            tgt_lang = fields.get("tgt_lang") or (default_langs or (None, None))[1]
            if not src_lang or not tgt_lang:
                raise InputError(f"{record.where}: no src_lang/tgt_lang (name the pair, e.g. hf:NAME:cmn-eng)")
            key = f"{record.where}"
            if str(src).strip() and str(tgt).strip():
                sentences += [Sentence(str(src), normalize_lang(src_lang), key), Sentence(str(tgt), normalize_lang(tgt_lang), key)]
        elif fields.get("group") is not None and "text" in fields and "lang" in fields:
            if fields["group"] and str(fields["text"]).strip():
                sentences.append(Sentence(str(fields["text"]), normalize_lang(fields["lang"]), f"group:{fields['group']}"))
        else:
            raise InputError(f"{record.where}: expected src/tgt (+ src_lang/tgt_lang) or text/lang/group fields")
    if not sentences:
        raise InputError(f"{corpus}: no parallel sentences")
    return ParallelSet(Path(corpus).name if not corpus.startswith(HF_PREFIX) else corpus, sentences)


def load_parallel(source: str, pairs: list[str]) -> list[ParallelSet]:
    """Whatever `xlsearch eval` was pointed at: a Tatoeba directory (with --pairs), a file or directory of
    pair records or grouped documents, or an hf: dataset whose config names the pair (`...:cmn-eng`)."""
    path = Path(source)
    if pairs:
        if not path.is_dir():
            raise InputError(f"{source}: `pairs` needs a directory of tatoeba.xxx-eng.xxx files")
        return load_tatoeba(path, pairs)
    if path.is_dir() and any(path.glob("tatoeba.*-*.*")):
        raise InputError(f"{source}: a Tatoeba directory; choose pairs with `pairs`, e.g. cmn-eng,jpn-eng")
    langs = None
    if source.startswith(HF_PREFIX):
        config = source[len(HF_PREFIX):].split(":")[1:2]
        if config and "-" in config[0]:
            langs = tuple(config[0].split("-", 1))
    return [load_records(source, langs)]
