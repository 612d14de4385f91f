"""A paragraph-retrieval set built from Tatoeba: consecutive lines joined into paragraphs, the same lines
joined in every language that has them, queried by single sentences of another language's version.

Tatoeba's pair files (tatoeba.xxx-eng.xxx beside tatoeba.xxx-eng.eng) each translate their own English
lines, and some English lines occur in several pairs. Each English line goes to the languages that
translate it; lines with the same set of languages, in the order the pair files give them, are joined
consecutively, so that a group is one run of English lines, in English and in each of those languages
(two languages for most groups: a pair file's own lines; three or more where pairs share lines, as
deu/jpn, dsb/hsb and kzj/zsm do). Each English line belongs to one group only, so a query sentence has
its meaning in one group.

Paragraphs run 400 to 1,500 characters in alphabetic scripts and at most 500 in CJK, each group's length
drawn (seeded) in that range, so the set holds short and long paragraphs alike. Pure text processing:
the whole set builds in well under a second.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xlsearch.engine.errors import InputError
from xlsearch.engine.languages import normalize_lang

# Languages written in CJK scripts (codes as normalize_lang gives them): a character there is about a
# word, so their paragraphs are bounded by MAX_CJK_CHARS and joined without spaces (but Korean).
CJK_LANGS = frozenset({"zh", "ja", "ko", "wuu", "yue"})
UNSPACED_LANGS = frozenset({"zh", "ja", "wuu", "yue"})
MIN_CHARS, MAX_CHARS = 400, 1500  # an alphabetic-script paragraph
MAX_CJK_CHARS = 500
SEED = 18  # the issue that asked for the set: lengths and query sentences are drawn from it


@dataclass(frozen=True)
class Paragraph:
    id: str  # "<group>/<lang>"
    lang: str  # normalised (`de`, `zh`, ...)
    text: str
    group: str  # the same lines in every language share it

    @property
    def cjk(self) -> bool:
        """Written in a CJK script (bounded at MAX_CJK_CHARS rather than MIN_CHARS..MAX_CHARS)."""
        return self.lang in CJK_LANGS


@dataclass(frozen=True)
class Query:
    id: str  # "<group>/<lang>/q"
    lang: str
    text: str  # one line of the group's paragraph in `lang`
    group: str  # relevant: the group's paragraphs in the other languages


@dataclass
class ParagraphSet:
    paragraphs: list[Paragraph]
    queries: list[Query]
    _by_group: dict[str, list[Paragraph]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_group = {}
        for paragraph in self.paragraphs:
            self._by_group.setdefault(paragraph.group, []).append(paragraph)

    @property
    def groups(self) -> list[str]:
        """Group ids in build order."""
        return list(self._by_group)

    def relevant(self, query: Query) -> list[str]:
        """Ids of the paragraphs that answer `query`: its group's, in every language but the query's own
        (whose paragraph contains the query sentence word for word)."""
        return [p.id for p in self._by_group[query.group] if p.lang != query.lang]

    def split(self, half: str) -> ParagraphSet:
        """The `fit` or `held_out` half, by group (`is_held_out`): a group's paragraphs and queries stay
        together, and a group keeps its half whatever languages were selected."""
        if half not in ("fit", "held_out"):
            raise InputError("expected fit or held_out", field="half", value=half)
        keep = half == "held_out"
        return ParagraphSet([p for p in self.paragraphs if is_held_out(p.group) == keep],
                            [q for q in self.queries if is_held_out(q.group) == keep])


def is_held_out(group: str) -> bool:
    """Whether a group belongs to the held-out half: by a checksum of its id, so about half of the groups
    and the same ones on every machine and for every language selection."""
    return zlib.crc32(group.encode("utf-8")) % 2 == 1


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _translations(tatoeba_dir: Path) -> dict[str, dict[str, str]]:
    """English line -> {language: its translation}, English lines in the order of the pair files (sorted by
    name) and of their lines; a line a pair gives twice keeps its first translation."""
    pairs = sorted(tatoeba_dir.glob("tatoeba.*-eng.eng"))
    if not pairs:
        raise InputError(f"{tatoeba_dir}: no tatoeba.xxx-eng.eng files")
    translations: dict[str, dict[str, str]] = {}
    for english_file in pairs:
        code = english_file.name.split(".")[1].split("-")[0]
        english = _read_lines(english_file)
        other = _read_lines(english_file.with_suffix(f".{code}"))
        if len(english) != len(other):
            raise InputError(f"{english_file.with_suffix('.*')}: {len(english)} and {len(other)} lines are not aligned")
        lang = normalize_lang(code)
        for line, translation in zip(english, other):
            line, translation = line.strip(), translation.strip()
            if line and translation:
                translations.setdefault(line, {}).setdefault(lang, translation)
    return translations


def _join(lang: str, lines: Iterable[str]) -> str:
    return ("" if lang in UNSPACED_LANGS else " ").join(lines)


def _fits(lang: str, length: int) -> bool:
    return length <= (MAX_CJK_CHARS if lang in CJK_LANGS else MAX_CHARS)


def _runs(english: list[str], translations: dict[str, dict[str, str]], langs: tuple[str, ...],
          rng: random.Random) -> Iterable[dict[str, list[str]]]:
    """Consecutive runs of `english` lines (all translated into `langs`) as {language: lines}, each run
    growing until its shortest alphabetic version reaches a drawn length, never past a bound."""
    versions = ("en", *langs)
    run: dict[str, list[str]] = {lang: [] for lang in versions}
    lengths = dict.fromkeys(versions, -1)  # -1: the first line adds no separator
    target = rng.randint(MIN_CHARS, MAX_CHARS)
    alphabetic = [lang for lang in versions if lang not in CJK_LANGS]
    for line in english:
        texts = {"en": line, **{lang: translations[line][lang] for lang in langs}}
        grown = {lang: lengths[lang] + (lang not in UNSPACED_LANGS) + len(texts[lang]) for lang in versions}
        if run["en"] and not all(_fits(lang, grown[lang]) for lang in versions):
            yield run  # the next line would overflow a version: the run ends here, short or not
            run, lengths = {lang: [] for lang in versions}, dict.fromkeys(versions, -1)
            target = rng.randint(MIN_CHARS, MAX_CHARS)
            grown = {lang: len(texts[lang]) for lang in versions}
        for lang in versions:
            run[lang].append(texts[lang])
        lengths = grown
        if min(lengths[lang] for lang in alphabetic) >= target:
            yield run
            run, lengths = {lang: [] for lang in versions}, dict.fromkeys(versions, -1)
            target = rng.randint(MIN_CHARS, MAX_CHARS)
    if run["en"]:
        yield run


def build_paragraph_set(tatoeba_dir: Path | str, languages: Iterable[str] | None = None) -> ParagraphSet:
    """The paragraph set of a Tatoeba directory (LASER's layout), in `languages` only (any codes
    normalize_lang knows: `deu` or `de`; None: all). A version outside its length bounds is left out of
    its group; a group left with fewer than two languages is dropped. One query per group and language:
    a line of that language's version (drawn, seeded), among the lines no other group shares in that
    language. Deterministic: the same directory gives the same set, ids and halves."""
    tatoeba_dir = Path(tatoeba_dir)
    if not tatoeba_dir.is_dir():
        raise InputError(f"{tatoeba_dir}: no such directory")
    wanted = None if languages is None else {normalize_lang(code) for code in languages}
    translations = _translations(tatoeba_dir)
    by_langs: dict[tuple[str, ...], list[str]] = {}
    for line, versions in translations.items():
        by_langs.setdefault(tuple(sorted(versions)), []).append(line)
    rng = random.Random(SEED)
    groups: list[tuple[str, dict[str, list[str]]]] = []
    for langs, english in by_langs.items():
        for number, run in enumerate(_runs(english, translations, langs, rng)):
            kept = {lang: lines for lang, lines in run.items() if _within(lang, _join(lang, lines))}
            if "en" in kept:  # every other version is about as long: a run too short in English is too short
                groups.append((f"{'+'.join(langs)}:{number:03d}", kept))
    shared = Counter((lang, line) for _, run in groups for lang, lines in run.items() for line in set(lines))
    paragraphs, queries = [], []
    for group, run in groups:
        run = {lang: lines for lang, lines in run.items() if wanted is None or lang in wanted}
        if len(run) < 2:
            continue
        for lang, lines in run.items():
            paragraphs.append(Paragraph(f"{group}/{lang}", lang, _join(lang, lines), group))
            unique = [line for line in lines if shared[lang, line] == 1]
            if unique:
                line = random.Random(f"{SEED}:{group}:{lang}").choice(unique)
                queries.append(Query(f"{group}/{lang}/q", lang, line, group))
    return ParagraphSet(paragraphs, queries)


def _within(lang: str, text: str) -> bool:
    return bool(text) and _fits(lang, len(text)) and (lang in CJK_LANGS or len(text) >= MIN_CHARS)
