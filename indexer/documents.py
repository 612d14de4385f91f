"""What readers produce and the pipeline indexes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Record:
    """One raw row of a corpus file, before field mapping. `where` names it in error messages."""

    fields: dict
    source: str
    row: int
    lang: str | None = None  # known from the file itself (Tatoeba suffixes)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.row}"


@dataclass
class Document:
    id: str
    text: str
    lang: str
    source: str
    extra: dict = field(default_factory=dict)
