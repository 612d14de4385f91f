"""How an index is built and ranked: chosen once at build time, kept in the manifest, reused by every
rewrite (append, delete) so an update never silently changes the ranking."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.errors import InputError

SCORINGS = ("margin", "cosine")


@dataclass(frozen=True)
class IndexSettings:
    language_neutral: bool = True
    # margin: cosine divided by the mean cosine of query and document to their nearest neighbours
    # (engine.ranking); it keeps same-language search as good as plain cosine on a language-neutral index
    scoring: str = "margin"

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise InputError(f"--scoring {self.scoring!r}: expected one of {', '.join(SCORINGS)}")

    def to_manifest(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict) -> IndexSettings:
        """The settings an index was built with; indexes older than a setting get its old behaviour."""
        saved = manifest.get("settings", {})
        return cls(
            language_neutral=saved.get("language_neutral", manifest.get("language_neutral") is not None),
            scoring=saved.get("scoring", "cosine"),
        )
