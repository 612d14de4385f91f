"""One spelling per language: `ja`, `jpn` and `ja-JP` are all `ja` everywhere in xlsearch."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from xlsearch.engine.errors import InputError


@functools.lru_cache(maxsize=4096)
def normalize_lang(code: str) -> str:
    """Canonical code: the ISO 639-1 code where one exists, else ISO 639-3; macrolanguage preferred
    (`cmn` -> `zh`, `arb` -> `ar`), region and script dropped (`zh-Hant-TW` -> `zh`)."""
    # langcodes builds its tables on import (0.2 s): only when a code is actually given
    import langcodes

    raw = code.strip().replace("_", "-")
    try:
        language = langcodes.Language.get(raw)
    except (ValueError, langcodes.tag_parser.LanguageTagError):
        raise InputError(f"unknown language code {code!r}") from None
    if not language.language or not language.is_valid():
        raise InputError(f"unknown language code {code!r}")
    return language.prefer_macrolanguage().language


def parse_lang_list(value: str | Iterable[str] | None) -> list[str]:
    """`"ja,en"` or `["ja", "en"]` -> normalised, de-duplicated, in the given order."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    return list(dict.fromkeys(normalize_lang(p) for p in parts if p.strip()))


def detect_lang(text: str) -> str:
    """Best-guess language of a text, normalised."""
    # py3langid ships its model inside the package; importing it costs ~1.5 s, so only on first use.
    import py3langid

    code, _score = py3langid.classify(text)
    return normalize_lang(code)
