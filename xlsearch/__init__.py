"""xlsearch: cross-lingual semantic search. Search in any language, find documents in every language.

    import xlsearch
    ix = xlsearch.Index.open("indexes/demo")
    for hit in ix.search("天气", k=3):
        print(hit.score, hit.lang, hit.text)

Names are imported on first use, so `xlsearch` itself (and the command line) starts without them."""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "Index": "xlsearch.index",
    "Deletion": "xlsearch.index",
    "EmbedderSpec": "xlsearch.engine.embedders.spec",
    "IndexSettings": "xlsearch.engine.store.settings",
    "Manifest": "xlsearch.engine.store.manifest",
    "FieldMap": "xlsearch.indexer.mapper",
    "BuildResult": "xlsearch.indexer.pipeline",
    "Hit": "xlsearch.engine.search",
    "XLSearchError": "xlsearch.engine.errors",
    "InputError": "xlsearch.engine.errors",
    "IndexMismatchError": "xlsearch.engine.errors",
    "StorageError": "xlsearch.engine.errors",
    "BackendError": "xlsearch.engine.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xlsearch' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
