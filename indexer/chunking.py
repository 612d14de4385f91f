"""Long documents to overlapping chunks, cut at sentence ends where possible."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at . ! ? (and their CJK forms) followed by space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")


@dataclass(frozen=True)
class ChunkPolicy:
    size: int  # characters; by default what always fits the embedder's input limit, whatever the script
    overlap: int

    @classmethod
    def for_model(cls, max_chars: int, size: int | None = None, overlap: int | None = None) -> ChunkPolicy:
        """A chunk size (default: `max_chars`, the characters that always fit the embedder's input limit,
        its `max_input_chars`) and overlap (default: an eighth of a chunk), the overlap never more than
        half a chunk."""
        size = size or max_chars
        return cls(size, min(size // 2, size // 8 if overlap is None else overlap))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > start:
            spans.append((start, match.start() if match.start() > start else match.end()))
            start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _pieces(text: str, size: int) -> list[tuple[int, int]]:
    """Sentences, with any sentence longer than a chunk cut into chunk-sized pieces."""
    pieces = []
    for start, end in sentence_spans(text):
        while end - start > size:
            pieces.append((start, start + size))
            start += size
        pieces.append((start, end))
    return pieces


def chunk_spans(text: str, policy: ChunkPolicy) -> list[tuple[int, int]]:
    """Character spans of the chunks of `text`: whole sentences packed up to `size`, each chunk
    starting with the last sentences of the one before, up to `overlap` characters."""
    if len(text) <= policy.size:
        return [(0, len(text))]
    pieces = _pieces(text, policy.size)
    chunks: list[tuple[int, int]] = []
    first = 0
    while first < len(pieces):
        last = first
        while last + 1 < len(pieces) and pieces[last + 1][1] - pieces[first][0] <= policy.size:
            last += 1
        chunks.append((pieces[first][0], pieces[last][1]))
        if last + 1 >= len(pieces):
            break
        # step back over whole sentences that fit in the overlap and leave room for the next sentence,
        # so every chunk reaches further than the one before
        following = pieces[last + 1][1]
        next_first = last + 1
        while (next_first - 1 > first and pieces[last][1] - pieces[next_first - 1][0] <= policy.overlap
               and following - pieces[next_first - 1][0] <= policy.size):
            next_first -= 1
        first = next_first
    return chunks
