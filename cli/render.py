"""How results look: rich tables for people, JSON for pipes."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from engine.search import Hit

FORMATS = ("table", "json", "jsonl")
stdout = Console(soft_wrap=False)


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def print_jsonl(values: list) -> None:
    for value in values:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")


def hits_table(query: str, hits: list[Hit]) -> Table:
    table = Table(title=query, title_justify="left", show_lines=False)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("lang")
    table.add_column("id", overflow="fold")
    table.add_column("text", overflow="fold", ratio=1)
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.lang, hit.id, hit.text)
    return table


def matrix_table(labels: list[str], matrix, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for i in range(len(labels)):
        table.add_column(str(i + 1), justify="right")
    for i, label in enumerate(labels):
        short = label if len(label) <= 40 else label[:39] + "…"
        table.add_row(f"{i + 1}. {short}", *(f"{v:.3f}" for v in matrix[i]))
    return table


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table
