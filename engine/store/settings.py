"""How an index is built and ranked: chosen once at build time, kept in the manifest, reused by every
rewrite (append, delete) so an update never silently changes the ranking."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from xlsearch.engine.errors import InputError
from xlsearch.engine.ann.faiss_index import DEVICES
from xlsearch.engine.ann.index_types import STORAGES

SCORINGS = ("margin", "cosine")


@dataclass(frozen=True)
class IndexSettings:
    language_neutral: bool = True
    # margin: cosine divided by the mean cosine of query and document to their nearest neighbours
    # (engine.ranking); it keeps same-language search as good as plain cosine on a language-neutral index
    scoring: str = "margin"
    index_type: str = "auto"  # or flat, hnsw, ivf, ivfpq, or a FAISS factory string (engine.index_types)
    storage: str = "float32"  # float16 or sq8 (8-bit scalar quantisation) to cut memory
    max_memory: int | None = None  # bytes the index may take; default a share of physical memory
    device: str = "auto"  # where FAISS trains and adds: auto, cpu, gpu

    def __post_init__(self) -> None:
        for name, allowed in (("scoring", SCORINGS), ("storage", STORAGES), ("device", DEVICES)):
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"expected one of {', '.join(allowed)}", field=name, value=value)

    def to_manifest(self) -> dict:
        return asdict(self)
