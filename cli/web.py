"""`xlsearch serve`: the engine behind an HTTP JSON API, an interface layer like the CLI. FastAPI writes the
OpenAPI description and serves it at /api-docs. Every answer is whole from one index version: a search
takes the version published when it starts, and the first request after a publish switches to the new one
(SIGHUP switches at once). Requests are bounded (cli.guard's Limits) and guarded (Host, key, CORS)."""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, which name this server's
# limits and its batch model (local to create_app), and a string annotation would be looked up globally.
import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Optional, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from xlsearch.cli.batching import QueryBatcher
from xlsearch.cli.guard import Access, Guard, Limits
from xlsearch.engine.apps.documents import read_document
from xlsearch.engine.errors import IndexMismatchError, InputError, XLSearchError
from xlsearch.engine.languages import normalize_lang, parse_lang_list
from xlsearch.engine.profiles import resolve_task
from xlsearch.engine.search import Searcher, check_queries
from xlsearch.index import Index

MAX_K = 100
TASK_HELP = ("The queries' task instruction (Qwen3-Embedding models), or a preset: retrieval, parallel, dedup, "
             "clustering; default: the index's task.")
PAGE = files("xlsearch.cli") / "static" / "search.html"
VERSION_HEADER = "X-Index-Version"  # on every search answer: which version answered it
log = logging.getLogger("uvicorn.error")  # uvicorn's: configured by uvicorn.run, shown at its level

T = TypeVar("T")


class DeadlinePassed(Exception):
    """A request was not answered within its deadline."""


def search_batch_model(limits: Limits) -> type[BaseModel]:
    """POST /search's body, with this server's limits (in the OpenAPI description too)."""
    query = Annotated[str, Field(max_length=limits.max_query_chars)]
    return create_model(
        "SearchBatch",
        queries=(list[query], Field(min_length=1, max_length=limits.max_batch, description="Queries, in any languages.")),
        k=(int, Field(10, ge=1, le=MAX_K, description="Hits per query.")),
        lang=(Optional[str], Field(None, description="Only these languages, e.g. ja,en.")),
        query_lang=(Optional[str], Field(None, description="The queries' language (else detected).")),
        task=(Optional[query], Field(None, description=TASK_HELP)),
    )


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def validation_message(exc: RequestValidationError) -> str:
    """`k: Input should be greater than or equal to 1`: where, then what, for each problem."""
    problems = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem["loc"] if part not in ("query", "body")) or "request body"
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)


def create_app(served: Index, limits: Limits = Limits(), access: Access = Access(),
               on_notice: Callable[[str], None] = log.warning) -> FastAPI:
    """The API over `served`, whose embedder is made (and checked) by the caller. `on_notice` hears when
    a new version is served or cannot be."""
    def embed_for_tasks(tasked: list[tuple[str | None, str]]) -> np.ndarray:
        """The batcher's texts are (task, query) pairs, requests of several tasks waiting together: one
        embedder call per task, rows in the pairs' order."""
        rows = np.zeros((len(tasked), served.embedder.dim), dtype=np.float32)
        for task in dict.fromkeys(task for task, _ in tasked):
            positions = [i for i, (t, _) in enumerate(tasked) if t == task]
            rows[positions] = served.embedder.embed_queries([tasked[i][1] for i in positions], task)
        return rows

    batcher = QueryBatcher(embed_for_tasks, limits.max_batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()  # after the requests in flight are answered (uvicorn drains them first)

    app = FastAPI(title="xlsearch", description="Cross-lingual semantic search over one index.",
                  docs_url="/api-docs", redoc_url=None, swagger_ui_oauth2_redirect_url=None, lifespan=lifespan)
    app.add_middleware(Guard, access=access, max_body=limits.body_bytes)
    if access.cors_origins:  # outermost: preflights and refusals carry the CORS headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(access.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=[VERSION_HEADER])
    switching = threading.Lock()  # one thread opens a new version; the others wait for it, then use it
    SearchBatch = search_batch_model(limits)

    def current() -> Searcher:
        """The searcher of the version published now: a request uses this one throughout."""
        with switching:
            before = served.reader.version
            try:
                if served.refresh():
                    on_notice(f"serving version {served.reader.version} ({served.info.created}) of {served.path}, "
                              f"{served.info.documents} documents; was {before}")
            except XLSearchError as exc:
                on_notice(f"still serving version {before}: the one published since cannot be: {exc}")
            return served.searcher

    app.state.switch = current  # SIGHUP's: switch now rather than at the next request

    async def within(deadline: float, work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise DeadlinePassed from None

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request, exc: RequestValidationError) -> JSONResponse:
        # jsonable_encoder: a malformed body's problems carry bytes and exceptions that json.dumps refuses
        return JSONResponse({"error": validation_message(exc), "detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(XLSearchError)
    def engine_error(_request, exc: XLSearchError) -> JSONResponse:
        # a damaged index or a model that does not fit it is the server's problem, not the request's
        status = 400 if isinstance(exc, InputError) and not isinstance(exc, IndexMismatchError) else 500
        return JSONResponse({"error": str(exc), **({"field": exc.field} if exc.field else {})}, status_code=status)

    @app.exception_handler(DeadlinePassed)
    def deadline_passed(_request, _exc: DeadlinePassed) -> JSONResponse:
        return JSONResponse({"error": f"not answered within the server's deadline of {limits.deadline:g} s: it is "
                                      "busy, try again"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(HTTPException)
    def http_error(_request, exc: HTTPException) -> JSONResponse:  # unknown paths, wrong methods
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    def internal_error(_request, exc: Exception) -> JSONResponse:
        # uvicorn logs the traceback too: the client gets one line, the operator the whole story
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    async def run(queries: list[str], k: int, lang: str | None, query_lang: str | None, task: str | None,
                  response: Response) -> list[dict]:
        deadline = time.monotonic() + limits.deadline
        check_queries(queries)  # refused before any embedding, as are unknown languages
        langs = parse_lang_list(lang)
        if query_lang is not None:
            normalize_lang(query_lang)
        task = resolve_task(task) or served.task
        searcher = await within(deadline, run_in_threadpool(current))
        future = batcher.submit([(task, query) for query in queries])
        raw = await within(deadline, asyncio.wrap_future(future))  # a timeout cancels the future: never embedded
        results = await within(deadline, run_in_threadpool(searcher.rank, raw, k, langs, query_lang, queries, task))
        response.headers[VERSION_HEADER] = searcher.index.version
        return [{"query": q, "hits": [hit.to_dict() for hit in hits]} for q, hits in zip(queries, results)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health(request: Request) -> dict:
        """Up, and (with the key, when the server has one) which version it serves."""
        if not request.state.authorized:
            return {"status": "ok"}
        reader = current().index
        manifest = reader.manifest
        return {"status": "ok", "index": str(served.path), "version": reader.version, "created": manifest.created,
                "documents": manifest.documents, "languages": manifest.languages, "model": manifest.model}

    @app.get("/search")
    async def search(
        response: Response,
        q: Annotated[str, Query(min_length=1, max_length=limits.max_query_chars, description="The query, in any language.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="Hits.")] = 10,
        lang: Annotated[Optional[str], Query(description="Only these languages, e.g. ja,en.")] = None,
        query_lang: Annotated[Optional[str], Query(description="The query's language (else detected).")] = None,
        task: Annotated[Optional[str], Query(max_length=limits.max_query_chars, description=TASK_HELP)] = None,
    ) -> dict:
        return (await run([q], k, lang, query_lang, task, response))[0]

    @app.post("/search")
    async def search_batch(batch: SearchBatch, response: Response) -> dict:
        return {"results": await run(batch.queries, batch.k, batch.lang, batch.query_lang, batch.task, response)}

    @app.get("/docs/{doc_id:path}")
    def document(doc_id: str) -> dict:
        try:
            return read_document(current().index, doc_id)
        except InputError:
            return error(404, f"no document with id {doc_id!r}")

    return app
