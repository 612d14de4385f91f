"""Long documents to overlapping chunks of whole sentences, each within the model's input limit, counted
in the model's own tokens where a tokenizer is at hand (or characters, where asked for)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from xlsearch.engine.embedders.base import Embedder
from xlsearch.engine.embedders.limits import document_tokens, longest_prefix
from xlsearch.engine.profiles import ModelProfile

# A sentence ends at . ! ? (and the Devanagari, Arabic, Urdu, Armenian and Ethiopic full stops and question
# marks) followed by space, at the CJK forms whether or not a space follows, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?।؟۔։።])\s+|(?<=[。！？])\s*|\n+")
# A sentence longer than a chunk is cut at its last whitespace within this share of the chunk's end (a
# word kept whole), else at the limit itself
_WORD_CUT = 1 / 8
# Characters a token may take, at most, where a sentence longer than a chunk is cut: a bound on the
# search only (natural text measured 2 to 4 characters a token), so a cut never looks further than this
_MAX_CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class ChunkPolicy:
    """At most `size` of `unit` in a chunk, each chunk starting with up to `overlap` of the one before.
    In "tokens" (the default) a chunk is counted as `profile`'s model sees it: its prompt and the tokens
    the model adds included, exactly by the model's own tokenizer where this machine has it, else by a
    per-script bound (`limits.token_bound`). Plain data, so a job can send it to other processes."""

    size: int
    overlap: int
    unit: str = "characters"  # or "tokens"
    profile: ModelProfile | None = None  # whose tokens, for unit "tokens"

    @classmethod
    def for_model(cls, max_chars: int, size: int | None = None, overlap: int | None = None) -> ChunkPolicy:
        """Chunks in characters: `size` (default: `max_chars`, the characters that always fit the
        embedder's input limit, its `max_input_chars`) and overlap (default: an eighth of a chunk), the
        overlap never more than half a chunk."""
        size = size or max_chars
        return cls(size, min(size // 2, size // 8 if overlap is None else overlap))

    @classmethod
    def for_embedder(cls, embedder: Embedder, size: int | None = None, overlap: int | None = None,
                     saved: dict | None = None) -> ChunkPolicy:
        """The embedder's chunks: by default as many tokens as one input takes (`max_input_tokens`) and
        an eighth of that overlapping; characters where `size` or `overlap` are given (`--chunk-size`,
        `--chunk-overlap`); or as an index records its chunks (`saved`: `record()`'s), never over the
        embedder's limit (an index of characters stays in characters)."""
        if saved is not None and saved.get("unit", "characters") == "characters":
            return cls.for_model(embedder.max_input_chars, min(saved["size"], embedder.max_input_chars), saved["overlap"])
        if saved is None and (size is not None or overlap is not None):
            return cls.for_model(embedder.max_input_chars, size, overlap)
        tokens = min(saved["size"], embedder.max_input_tokens) if saved else embedder.max_input_tokens
        return cls(tokens, min(tokens // 2, saved["overlap"] if saved else tokens // 8), "tokens", embedder.profile)

    def measure(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in this policy's unit (as a whole chunk: tokens include the prompt's)."""
        if self.unit == "tokens":
            return document_tokens(self.profile, texts)
        return [len(text) for text in texts]

    def record(self) -> dict:
        """What an index manifest keeps of its chunking (`for_embedder(saved=...)` reads it back)."""
        return {"size": self.size, "overlap": self.overlap, "unit": self.unit}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > start:
            spans.append((start, match.start() if match.start() > start else match.end()))
            start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _cut(text: str, start: int, end: int, policy: ChunkPolicy) -> list[tuple[int, int]]:
    """A sentence longer than a chunk, as pieces that each fit one: the longest start that fits, back to
    its last whitespace where that is near the end."""
    pieces = []
    while start < end:
        window = text[start:min(end, start + policy.size * _MAX_CHARS_PER_TOKEN)]
        fitting = len(longest_prefix(window, lambda prefix: policy.measure([prefix])[0] <= policy.size)) or 1
        if start + fitting < end:
            space = max(text.rfind(" ", start, start + fitting), text.rfind("\n", start, start + fitting))
            if space > start + fitting * (1 - _WORD_CUT):
                fitting = space + 1 - start
        pieces.append((start, start + fitting))
        start += fitting
    return pieces


def chunk_spans(text: str, policy: ChunkPolicy) -> list[tuple[int, int]]:
    """Character spans of the chunks of `text`: whole sentences packed up to the policy's size, each chunk
    starting with the last sentences of the one before, up to its overlap; a sentence is cut only where
    it alone is longer than a chunk."""
    if policy.measure([text])[0] <= policy.size:
        return [(0, len(text))]
    sentences = sentence_spans(text)
    pieces, lengths = [], []
    for (start, end), length in zip(sentences, policy.measure([text[a:b] for a, b in sentences])):
        if length <= policy.size:
            pieces.append((start, end))
            lengths.append(length)
        else:
            cut = _cut(text, start, end, policy)
            pieces += cut
            lengths += policy.measure([text[a:b] for a, b in cut])
    # a chunk's length estimated as its pieces' (less the prompt each piece was counted with), then checked
    prompt = policy.measure([""])[0]
    before = [0, *accumulate(length - prompt for length in lengths)]

    def length(first: int, last: int) -> int:
        if policy.unit == "characters":
            return pieces[last][1] - pieces[first][0]
        return prompt + before[last + 1] - before[first]

    chunks: list[tuple[int, int]] = []
    first = 0
    while first < len(pieces):
        last = first
        while last + 1 < len(pieces) and length(first, last + 1) <= policy.size:
            last += 1
        while last > first and policy.measure([text[pieces[first][0]:pieces[last][1]]])[0] > policy.size:
            last -= 1  # the estimate ran over: the exact count has the last word
        chunks.append((pieces[first][0], pieces[last][1]))
        if last + 1 >= len(pieces):
            break
        # step back over whole sentences that fit in the overlap and leave room for the next sentence,
        # so every chunk reaches further than the one before
        next_first = last + 1
        while (next_first - 1 > first and length(next_first - 1, last) - prompt <= policy.overlap
               and length(next_first - 1, last + 1) <= policy.size):
            next_first -= 1
        first = next_first
    return chunks
