"""`xlsearch serve`: the engine behind an HTTP JSON API, an interface layer like the CLI. One index,
loaded once, answers every request; FastAPI writes the OpenAPI description and serves it at /api-docs."""

from __future__ import annotations

import threading
from importlib.resources import files
from typing import Annotated, Optional

from fastapi import FastAPI, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from xlsearch.engine.apps.documents import read_document
from xlsearch.engine.errors import InputError, XLSearchError
from xlsearch.index import Index

MAX_K = 100
MAX_BATCH = 64
PAGE = files("xlsearch.cli") / "static" / "search.html"


class SearchBatch(BaseModel):
    queries: list[str] = Field(min_length=1, max_length=MAX_BATCH, description="Queries, in any languages.")
    k: int = Field(10, ge=1, le=MAX_K, description="Hits per query.")
    lang: Optional[str] = Field(None, description="Only these languages, e.g. ja,en.")
    query_lang: Optional[str] = Field(None, description="The queries' language (else detected).")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def validation_message(exc: RequestValidationError) -> str:
    """`k: Input should be greater than or equal to 1`: where, then what, for each problem."""
    problems = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem["loc"] if part not in ("query", "body")) or "request body"
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)


def create_app(served: Index) -> FastAPI:
    app = FastAPI(title="xlsearch", description="Cross-lingual semantic search over one index.",
                  docs_url="/api-docs", redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    # FastAPI runs these handlers on a thread pool; the embedder, its cache connection and the index's
    # lazily read columns are shared, so one request at a time goes through them.
    engine_lock = threading.Lock()
    index = served.reader

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request, exc: RequestValidationError) -> JSONResponse:
        # jsonable_encoder: a malformed body's problems carry bytes and exceptions that json.dumps refuses
        return JSONResponse({"error": validation_message(exc), "detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(XLSearchError)
    def engine_error(_request, exc: XLSearchError) -> JSONResponse:
        status = 400 if isinstance(exc, InputError) else 500
        return JSONResponse({"error": str(exc), **({"field": exc.field} if exc.field else {})}, status_code=status)

    def run(queries: list[str], k: int, lang: str | None, query_lang: str | None) -> list[dict]:
        if not all(q.strip() for q in queries):
            raise InputError("a query is empty")
        with engine_lock:
            results = served.search(queries, k=k, lang=lang, query_lang=query_lang)
        return [{"query": q, "hits": [hit.to_dict() for hit in hits]} for q, hits in zip(queries, results)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict:
        manifest = served.info
        return {"status": "ok", "index": str(served.path), "documents": manifest.documents,
                "languages": manifest.languages, "model": manifest.model}

    @app.get("/search")
    def search(
        q: Annotated[str, Query(min_length=1, description="The query, in any language.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="Hits.")] = 10,
        lang: Annotated[Optional[str], Query(description="Only these languages, e.g. ja,en.")] = None,
        query_lang: Annotated[Optional[str], Query(description="The query's language (else detected).")] = None,
    ) -> dict:
        return run([q], k, lang, query_lang)[0]

    @app.post("/search")
    def search_batch(batch: SearchBatch) -> dict:
        return {"results": run(batch.queries, batch.k, batch.lang, batch.query_lang)}

    @app.get("/docs/{doc_id:path}")
    def document(doc_id: str) -> dict:
        with engine_lock:
            try:
                return read_document(index, doc_id)
            except InputError:
                return error(404, f"no document with id {doc_id!r}")

    return app
