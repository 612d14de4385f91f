"""How an index is built and ranked: chosen once at build time, kept in the manifest, reused by every
rewrite (append, delete) so an update never silently changes the ranking."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from xlsearch.engine.errors import InputError
from xlsearch.engine.ann.faiss_index import DEVICES
from xlsearch.engine.ann.index_types import STORAGES

SCORINGS = ("parallel-margin", "margin", "cosine")
# The scorings that divide by each document's neighbourhood, computed when the index is written
NEIGHBOURHOOD_SCORINGS = ("parallel-margin", "margin")


@dataclass(frozen=True)
class IndexSettings:
    language_neutral: bool = True
    # margin: cosine divided by the mean cosine of query and document to their nearest neighbours
    # (engine.ranking); parallel-margin: the same, each document's likely translations left out of its
    # neighbourhood where it has several (engine.ranking.translations). The default because it is the one
    # never below the better of cosine and margin by more than a standard error on the held-out halves of
    # evaluation.suite's benchmarks (README, "Language-neutral ranking")
    scoring: str = "parallel-margin"
    index_type: str = "auto"  # or flat, hnsw, ivf, ivfpq, or a FAISS factory string (engine.index_types)
    storage: str = "float32"  # float16 or sq8 (8-bit scalar quantisation) to cut memory
    max_memory: int | None = None  # bytes the index may take; default a share of physical memory
    device: str = "auto"  # where FAISS trains and adds: auto, cpu, gpu

    def __post_init__(self) -> None:
        for name, allowed in (("scoring", SCORINGS), ("storage", STORAGES), ("device", DEVICES)):
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"expected one of {', '.join(allowed)}", field=name, value=value)

    @property
    def uses_neighbourhoods(self) -> bool:
        return self.scoring in NEIGHBOURHOOD_SCORINGS

    def to_manifest(self) -> dict:
        return asdict(self)
