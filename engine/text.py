"""What counts as text: the one rule the indexer (documents) and search (queries) share."""

from __future__ import annotations

import unicodedata


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: only whitespace and invisible format characters (Unicode category
    Cf: zero-width space and joiners, word joiner, byte-order mark, soft hyphen, direction marks). The
    model would embed such a text to a vector like any other and rank it as if it said something."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)
