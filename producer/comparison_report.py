"""A comparison for people: the agreement metrics as a table on a terminal, aligned plain lines in
logs and pipes; and as one JSON object or one CSV row for machines."""

from __future__ import annotations

import csv
import json
import math
from typing import TextIO

from rich import box
from rich.table import Table

from producer.comparison import Comparison
from producer.terminal import show

# The metrics a person reads first, with what each one means; the rest follow in the JSON and CSV.
_DESCRIBED = {
    "pairs_common": "pairs scored on both sides",
    "only_a": "pairs only in A",
    "only_b": "pairs only in B",
    "queries": "queries compared",
    "queries_without_order": "queries with < 2 pairs or all scores tied",
    "spearman": "Spearman rho, mean over queries",
    "spearman_p5": "Spearman rho, 5th percentile",
    "spearman_min": "Spearman rho, worst query",
    "kendall": "Kendall tau-b, mean over queries",
    "top1_changed": "share of queries whose top 1 changed",
    "ks": "Kolmogorov-Smirnov statistic of the scores",
    "mean_abs_diff": "mean |score B - score A|",
    "max_abs_diff": "max |score B - score A|",
    "truncated_a": "share of A's pairs truncated",
    "truncated_b": "share of B's pairs truncated",
}


def show_comparison(comparison: Comparison, stream: TextIO) -> None:
    rows = _rows(comparison)
    show(stream, _plain(comparison, rows), _table(comparison, rows))


def write_json(comparison: Comparison, stream: TextIO) -> None:
    record = {
        "a": {"label": comparison.a.label, "model": comparison.a.model, "notes": list(comparison.a.notes)},
        "b": {"label": comparison.b.label, "model": comparison.b.model, "notes": list(comparison.b.notes)},
        "top_k": list(comparison.top_ks),
        "metrics": {name: _json_value(value) for name, value in comparison.metrics.items()},
    }
    json.dump(record, stream, indent=2)
    stream.write("\n")


def write_csv(comparison: Comparison, stream: TextIO) -> None:
    writer = csv.writer(stream)
    writer.writerow(["a", "b", *comparison.metrics])
    writer.writerow([comparison.a.label, comparison.b.label, *map(_cell, comparison.metrics.values())])


def _rows(comparison: Comparison) -> list[tuple[str, str, str]]:
    described = dict(_DESCRIBED)
    for k in comparison.top_ks:
        described[f"top{k}"] = f"top-{k} overlap, mean over queries"
    order = [name for name in comparison.metrics if name in described]
    return [(name, _cell(comparison.metrics[name]), described[name]) for name in order]


def _plain(comparison: Comparison, rows: list[tuple[str, str, str]]) -> str:
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [*_heading(comparison), *(f"note: {note}" for note in _notes(comparison))]
    lines += [f"{name.ljust(width)}  {value.rjust(value_width)}  {meaning}" for name, value, meaning in rows]
    return "\n".join(lines)


def _table(comparison: Comparison, rows: list[tuple[str, str, str]]) -> Table:
    notes = _notes(comparison)
    table = Table(
        title="\n".join(_heading(comparison)),
        box=box.SIMPLE_HEAD,
        caption="\n".join(notes) if notes else None,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for name, value, meaning in rows:
        table.add_row(name, value, meaning)
    return table


def _heading(comparison: Comparison) -> list[str]:
    return [
        f"A: {_side(comparison.a.label, comparison.a.model)}",
        f"B: {_side(comparison.b.label, comparison.b.model)}",
    ]


def _notes(comparison: Comparison) -> list[str]:
    sides = (("A", comparison.a.notes), ("B", comparison.b.notes))
    return [f"{name}: {note}" for name, notes in sides for note in notes]


def _side(label: str, model: str | None) -> str:
    return f"{label} ({model})" if model else label


def _cell(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def _json_value(value: float | int | None) -> float | int | None:
    return None if isinstance(value, float) and math.isnan(value) else value
