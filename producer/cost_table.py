"""The cost report as a table: aligned plain columns (logs, pipes, tests) or a rich table for a
terminal, with a total row and the usage the price table could not price."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich import box
from rich.table import Table

from producer.terminal import show
from storage.ledger import CostRow

COLUMNS = (
    "requests",
    "tokens",
    "search_units",
    "pairs",
    "gpu_hours",
    "api_cost_usd",
    "gpu_cost_usd",
    "cost_usd",
    "cost_per_million_pairs",
)
EMPTY = "no usage in that range"
# The terminal table's headers, shorter than the plain columns' names so that it fits more terminals.
HEADERS = (
    "requests",
    "tokens",
    "search units",
    "pairs",
    "GPU hours",
    "API $",
    "GPU $",
    "cost $",
    "$ per M pairs",
)


def show_cost_table(by: Sequence[str], rows: Sequence[CostRow], stream: TextIO) -> None:
    """Print the rows grouped by ``by``: a table on a terminal, the plain columns elsewhere."""
    show(stream, cost_table_text(by, rows), cost_table(by, rows) if rows else EMPTY)


def cost_table_text(by: Sequence[str], rows: Sequence[CostRow]) -> str:
    if not rows:
        return EMPTY
    header = [*by, *COLUMNS]
    body = [_cells(row.group.values(), row.as_dict()) for row in rows]
    body.append(_cells(["total", *[""] * (len(by) - 1)], _totals(rows)))
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *body]
    ]
    return "\n".join(lines + [f"not priced: {note}" for note in _unpriced(rows)])


def cost_table(by: Sequence[str], rows: Sequence[CostRow]) -> Table:
    """Every column as wide as its widest cell or header: the table is never squeezed, so a run id, a
    model name or a number is never cut (a terminal too narrow for it gets the plain columns)."""
    notes = _unpriced(rows)
    headers = [*by, *HEADERS]
    body = [_cells(row.group.values(), row.as_dict()) for row in rows]
    body.append(_cells(["total", *[""] * (len(by) - 1)], _totals(rows)))
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    table = Table(
        box=box.SIMPLE_HEAD,
        caption="\n".join(f"not priced: {note}" for note in notes) or None,
        caption_justify="left",
    )
    for index, (header, width) in enumerate(zip(headers, widths, strict=True)):
        dimension = index < len(by)
        table.add_column(
            header,
            style="bold" if dimension else None,
            justify="left" if dimension else "right",
            min_width=width,
            no_wrap=True,
        )
    for index, line in enumerate(body):
        last = index == len(body) - 1
        table.add_row(*line, end_section=index == len(body) - 2, style="bold" if last else None)
    return table


def _cells(group: Iterable[object], values: dict[str, Any]) -> list[str]:
    return [*(str(value) for value in group), *(_cell(values[column]) for column in COLUMNS)]


def _unpriced(rows: Sequence[CostRow]) -> list[str]:
    return sorted({note for row in rows for note in row.unpriced})


def _totals(rows: Sequence[CostRow]) -> dict[str, Any]:
    total = CostRow(group={})
    for row in rows:
        total.requests += row.requests
        total.tokens += row.tokens
        total.search_units += row.search_units
        total.pairs += row.pairs
        total.gpu_hours += row.gpu_hours
        total.api_cost_usd += row.api_cost_usd
        total.gpu_cost_usd += row.gpu_cost_usd
    return total.as_dict()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return f"{value:,}"
