"""How results look: rich tables for people, JSON for pipes."""

from __future__ import annotations

import functools
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported where a table is drawn: it costs 45 ms, and JSON for pipes never needs it
    from rich.console import Console, RenderableType
    from rich.table import Table

    from xlsearch.engine.search import Hit
    from xlsearch.engine.store.manifest import Manifest

FORMATS = ("table", "json", "jsonl")


@functools.cache
def console() -> Console:
    from rich.console import Console

    return Console(soft_wrap=False)


def show(renderable: RenderableType) -> None:
    console().print(renderable)


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def print_jsonl(values: list) -> None:
    for value in values:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")


def hits_table(query: str, hits: list[Hit]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(query), title_justify="left", show_lines=False)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("lang")
    table.add_column("id", overflow="fold")
    table.add_column("text", overflow="fold", ratio=1)
    for hit in hits:
        # Text(): a document's own "[...]" is not rich markup
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.lang, Text(hit.id), Text(hit.text))
    return table


def matrix_table(labels: list[str], matrix, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("")
    for i in range(len(labels)):
        table.add_column(str(i + 1), justify="right")
    for i, label in enumerate(labels):
        short = label if len(label) <= 40 else label[:39] + "…"
        table.add_row(f"{i + 1}. {short}", *(f"{v:.3f}" for v in matrix[i]))
    return table


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def eval_summary_table(report: dict) -> Table:
    from rich.table import Table

    split = "; ".join(f"{p['set']}: fit {p['fit']}, score {p['score']}" for p in report["split"])
    table = Table(title=f"{report['mode']} evaluation, {report['model']}", caption=split, title_justify="left")
    for column in ("configuration", "avg R@1", "avg R@5", "avg R@10", "avg MRR", "worst direction", "same-lang top10"):
        table.add_column(column, justify="left" if column in ("configuration", "worst direction") else "right", no_wrap=column == "configuration")
    for config in report["configurations"]:
        average, worst = config["average"], config["worst"]
        share = config["same_language_top10_non_english"]
        table.add_row(
            config["name"],
            *(f"{average[m]:.3f}" for m in ("recall@1", "recall@5", "recall@10", "mrr")),
            f"{worst['direction']} {worst['recall@1']:.3f}",
            "-" if share is None else f"{share:.3f}",
        )
    return table


def eval_directions_table(report: dict) -> Table:
    """Recall@1 of each direction (rows) under each configuration (columns)."""
    from rich.table import Table

    configs = report["configurations"]
    table = Table(title="recall@1 per direction", title_justify="left")
    table.add_column("direction")
    for config in configs:
        table.add_column(config["name"], justify="right")
    for direction in configs[0]["directions"]:
        table.add_row(direction, *(f"{c['directions'][direction]['recall@1']:.3f}" for c in configs))
    return table


def duplicates_table(groups: list[dict], title: str) -> Table:
    """One line per member; a group's first line carries its number, size and weakest margin."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for column in ("group", "size", "margin", "lang", "id", "text"):
        table.add_column(column, justify="right" if column in ("group", "size", "margin") else "left",
                         overflow="fold", ratio=1 if column == "text" else None)
    for number, group in enumerate(groups, start=1):
        for position, doc in enumerate(group["documents"]):
            head = (str(number), str(group["size"]), f"{group['margin']:.3f}") if position == 0 else ("", "", "")
            # Text(), not a string: document text is data, and rich would read "[...]" in it as markup
            table.add_row(*head, doc["lang"], Text(doc["id"]), Text(doc["text"]), end_section=position == group["size"] - 1)
    return table


def clusters_table(clusters: list[dict], title: str, caption: str | None = None) -> Table:
    """One line per cluster: its size, its languages and its most central document in each language."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=caption, title_justify="left", show_lines=True)
    for column in ("cluster", "size", "languages", "representatives"):
        table.add_column(column, justify="right" if column in ("cluster", "size") else "left",
                         overflow="fold", ratio=1 if column == "representatives" else None)
    for number, cluster in enumerate(clusters):
        languages = " ".join(f"{lang} {n}" for lang, n in cluster["languages"].items())
        shown = Text("\n".join(f"[{lang}] {docs[0]['text']}" for lang, docs in cluster["representatives"].items()))
        table.add_row(str(number), str(cluster["size"]), languages, shown)
    return table


def dedup_evaluation_line(evaluation: dict) -> str:
    best = evaluation["best_in_hindsight"]
    return (f"against {evaluation['truth_field']!r}: precision {evaluation['precision']:.3f}, recall "
            f"{evaluation['recall']:.3f} ({evaluation['pairs_correct']}/{evaluation['pairs_true']} true pairs, "
            f"{evaluation['pairs_found']} found) at {evaluation['threshold']}; best in hindsight "
            f"{best['threshold']}: precision {best['precision']:.3f}, recall {best['recall']:.3f}")


def index_description(manifest: Manifest) -> str:
    """'IVF1024,Flat (ivf, float32), nprobe 16, recall@10 0.962 vs exact, 160.2 MB' for `info`."""
    from xlsearch.engine.ann.index_types import format_bytes

    built = manifest.index
    if "params" not in built:  # written before index types existed (migrated): always exact
        return f"{built['key']} ({manifest.metric})"
    from xlsearch.engine.ann.faiss_index import NEIGHBOURHOOD_GAP

    def listed(params: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in params.items())

    params = listed(built["params"])
    neighbourhoods = ""
    if "neighbourhoods_within" in built and manifest.settings.uses_neighbourhoods:
        depth = listed(built["neighbourhood_params"]) or "the same depth"
        # found exactly on a GPU (an index built there in memory, before the manifest said so, or out of
        # core, its lists trained on the CPU); updates are exact on a GPU and search through the index on a CPU
        exact = built.get("neighbourhoods_exact", built["device"] == "gpu")
        neighbourhoods = (f"; neighbourhoods exact (GPU), an update's on a CPU at {depth}" if exact else
                          # what the tuning measured (the held-out rows' means of their 4 nearest), not every row's
                          # stored neighbourhood: a 200k build (IVF711,SQ8, nprobe 112, rerank 2) 99.6% there, its
                          # parallel-margin neighbourhoods 99.7% of all rows
                          f"; neighbourhoods at {depth}, {built['neighbourhoods_within']:.1%} of held-out rows within "
                          f"{NEIGHBOURHOOD_GAP} of exact")
    return (f"{built['key']} ({built['kind']}, {built['storage']}, built on {built['device']})"
            + (f", {params}" if params else "")
            + f", recall@10 {built['recall@10']} vs exact" + (" (below target)" if built.get("below_target") else "")
            + f", {format_bytes(built['bytes'])}" + neighbourhoods)


def below_target_line(manifest: Manifest) -> str:
    """Why an index searches below the recall target, and what was tried."""
    from xlsearch.engine.ann.faiss_index import TARGET_RECALL

    built = manifest.index
    tried = "; ".join(f"{t['key']} {t['recall@10']}" for t in built.get("also_tried", []))
    return (f"{built['key']} reaches recall@10 {built['recall@10']} at its deepest search, below the "
            f"{TARGET_RECALL} target" + (f" (also tried: {tried})" if tried else "") + "; `info` shows it")
