"""manifest.json: what an index holds and how it was made, plus checksums of its other files. Read into
a typed Manifest; an index of the two previous formats is migrated on open (its files are the same), one
older than that is refused with the command that rebuilds it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from xlsearch.engine.embedders.spec import EmbedderSpec
from xlsearch.engine.errors import IndexMismatchError, InputError
from xlsearch.engine.ranking.neutral import METHOD
from xlsearch.engine.store.files import INDEX_FILE, segment_files
from xlsearch.engine.store.settings import IndexSettings

if TYPE_CHECKING:  # the index writers' types, named here only
    from xlsearch.engine.ann.faiss_index import BuiltIndex
    from xlsearch.engine.ranking.neutral import LanguageStats

# 4: rows in segments (metadata and raw vectors files each), rows deleted since the last full build,
#    each row's nearest neighbours kept for updates (read and migrated: format 3's files are segment 0)
# 3: the embedder spec that made the vectors, and complete settings, in one place each (read and migrated)
# 2: chunk columns in meta.parquet, documents and chunking in the manifest (read and migrated)
FORMAT_VERSION = 4
MIGRATED_VERSIONS = (2, 3)
MANIFEST_FILE = "manifest.json"


@dataclass
class Manifest:
    embedder: EmbedderSpec  # how queries are embedded: as the documents were
    model: str  # the model as it answered (a server's own name for it)
    family: str
    dim: int  # of the stored vectors
    prompts: dict[str, str]  # as sent to the model, {text} standing for the text
    corpora: list[str]
    chunking: dict  # size, overlap, unit
    documents: int
    count: int  # vectors (chunks) searched: the segments' rows less the deleted ones
    rejected: int  # inputs the embedding server refused, listed in rejects.jsonl
    skipped: dict[str, int]  # records not indexed, by reason
    languages: dict[str, int]  # vectors per language, most first
    language_neutral: dict | None  # method and languages of the statistics, None when ranking is plain
    settings: IndexSettings
    index: dict  # the FAISS index: kind, key, storage, device, sizes, tuned params and recall
    created: str
    checksums: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    metric: str = "inner_product"
    # the rows, in order: [{"number", "meta", "vectors", "rows"}], files named by engine.store.files
    segments: list[dict] = field(default_factory=list)
    deleted: int = 0  # rows removed since the last full build, listed in deleted.npy
    built_rows: int = 0  # rows the last full build wrote: what its statistics and training saw
    format_version: int = FORMAT_VERSION

    @property
    def index_type(self) -> str:
        return self.index["key"]

    @property
    def chunked(self) -> bool:
        return self.documents < self.count

    def to_dict(self) -> dict:
        data = asdict(self)
        data["embedder"] = self.embedder.to_manifest()
        data["settings"] = self.settings.to_manifest()
        return {"format_version": data.pop("format_version"), **data, "index_type": self.index_type}

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["embedder"] = EmbedderSpec.from_manifest(data["embedder"], cache=None)
        values["settings"] = IndexSettings(**data["settings"])
        return cls(**values)


def _migrated_from_3(data: dict) -> dict:
    """Format 3 held its rows in one meta.parquet and one vectors.npy: segment 0 of format 4."""
    return {**data, "format_version": FORMAT_VERSION, "deleted": 0, "built_rows": data["count"],
            "segments": [{"number": 0, **segment_files(0), "rows": data["count"]}]}


def _migrated_from_2(data: dict) -> dict:
    """Format 2 kept the embedder's fields at the top level and could lack settings older than it."""
    backend = data["backend"]
    endpoint = data.get("endpoint")
    saved = data.get("settings", {})
    return {
        **{k: v for k, v in data.items() if k not in ("backend", "requested_dim", "endpoint", "index_type")},
        "format_version": 3,
        "embedder": {"backend": backend, "model": data["model"], "dim": data.get("requested_dim"),
                     "family": data["family"] if backend == "openai" else None,
                     "endpoints": endpoint.split(",") if endpoint else []},
        "settings": {
            "language_neutral": saved.get("language_neutral", data.get("language_neutral") is not None),
            "scoring": saved.get("scoring", "cosine"),  # margin ranking came with its setting
            "index_type": saved.get("index_type", "flat"),
            "storage": saved.get("storage", "float32"),
            "max_memory": saved.get("max_memory"),
            "device": saved.get("device", "auto"),
        },
        "index": data.get("index") or {"kind": "flat", "key": data.get("index_type", "Flat"), "storage": "float32"},
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_manifest(data: bytes, path: Path) -> Manifest:
    """The manifest in `data`, read from `path` (named in errors)."""
    try:
        data = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable manifest: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version == 2:
        data, version = _migrated_from_2(data), 3
    if version == 3:
        data = _migrated_from_3(data)
    elif version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{path}: index format version {version!r}; this xlsearch reads {FORMAT_VERSION} "
            f"(and {', '.join(map(str, MIGRATED_VERSIONS))}): rebuild it with `xlsearch index`"
        )
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type or form
        raise IndexMismatchError(f"{path}: not a complete manifest ({type(exc).__name__}: {exc})") from None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False, sort_keys=False)
    (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")


def index_manifest(staging: Path, provenance, built: BuiltIndex, settings: IndexSettings, documents: int,
                   count: int, languages: Counter, stats: LanguageStats | None, rejected: int,
                   segments: list[dict], exact_neighbourhoods: bool = False) -> Manifest:
    """The manifest of the whole version staging holds, checksums and sizes of every file in it included;
    `exact_neighbourhoods`: its neighbourhoods were found by exact search (on a GPU), not through the index."""
    files = sorted(os.listdir(staging))
    return Manifest(
        embedder=provenance.embedder, model=provenance.model, family=provenance.family,
        dim=int(built.index.d), prompts=provenance.prompts, corpora=provenance.corpora, chunking=provenance.chunking,
        documents=documents, count=count, rejected=rejected, skipped=provenance.skipped,
        languages=dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        language_neutral={"method": METHOD, "languages": stats.languages} if stats is not None else None,
        settings=settings,
        index={"kind": built.plan.kind, "key": built.plan.key, "storage": built.plan.storage, "device": built.device,
               "estimated_bytes": built.plan.estimated_bytes, "bytes": (staging / INDEX_FILE).stat().st_size,
               **built.tuning, "below_target": built.below_target,
               **({"on_disk": True} if built.plan.on_disk else {}),
               **({"neighbourhoods_exact": True} if exact_neighbourhoods else {}),
               **({"also_tried": list(built.also_tried)} if built.also_tried else {})},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        checksums={name: file_sha256(staging / name) for name in files},
        sizes={name: (staging / name).stat().st_size for name in files},
        segments=segments, deleted=0, built_rows=count,
    )
