"""Reports and the --wait progress: rich tables and bars on a real terminal (a pseudo-terminal here),
the same plain lines as ever on a pipe, which logs, cron and tests parse."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest
from sqlalchemy import update

from producer.cost_table import show_cost_table
from producer.report import show_run_summary
from producer.watch import wait_for_run
from storage.ledger import Ledger
from storage.ledger.cost_report import CostRow
from storage.ledger.schema import Run, Shard
from storage.ledger.types import ShardPlanRow, utcnow

ROWS = [
    CostRow(
        group={"model": "cohere:rerank-v3.5"},
        requests=4,
        tokens=1200,
        search_units=3,
        pairs=300,
        api_cost_usd=0.006,
    ),
    CostRow(
        group={"model": "cross-encoder:m"},
        pairs=1000,
        tokens=50000,
        gpu_hours=2.0,
        unpriced=["GPU hours on x"],
    ),
]
PLAIN_COST_TABLE = """\
             model  requests  tokens  search_units  pairs  gpu_hours  api_cost_usd  gpu_cost_usd  cost_usd  cost_per_million_pairs
cohere:rerank-v3.5         4   1,200             3    300     0.0000        0.0060        0.0000    0.0060                 20.0000
   cross-encoder:m         0  50,000             0  1,000     2.0000        0.0000        0.0000    0.0000                  0.0000
             total         4  51,200             3  1,300     2.0000        0.0060        0.0000    0.0060                  4.6154
not priced: GPU hours on x
"""  # noqa: E501


@contextmanager
def terminal(columns: int = 200) -> Iterator[tuple[TextIO, list[str]]]:
    """A text stream on a real pseudo-terminal ``columns`` wide; the list gets what was drawn."""
    controller, device = os.openpty()
    fcntl.ioctl(device, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    stream = os.fdopen(device, "w", encoding="utf-8")
    drawn: list[str] = []
    try:
        yield stream, drawn
        stream.flush()
        chunks = []
        while select.select([controller], [], [], 0.2)[0]:
            chunks.append(os.read(controller, 65536))
        drawn.append(b"".join(chunks).decode("utf-8"))
    finally:
        stream.close()
        os.close(controller)


@contextmanager
def pipe() -> Iterator[tuple[TextIO, list[str]]]:
    """A text stream on a pipe (what cron, a log file or a test's capture is)."""
    reader, writer = os.pipe()
    stream = os.fdopen(writer, "w", encoding="utf-8")
    drawn: list[str] = []
    try:
        yield stream, drawn
        stream.close()
        with os.fdopen(reader, encoding="utf-8") as received:
            drawn.append(received.read())
    finally:
        if not stream.closed:
            stream.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    run = Run(
        run_id="r1",
        model="cross-encoder:m",
        queue="q",
        corpus_path="/c.parquet",
        status="queued",
        n_shards=2,
        n_pairs=30,
        n_queries=3,
        options={},
        created_at=utcnow(),
    )
    ledger.create_run(run, [ShardPlanRow(0, 20, 2, "in/0", "out/0"), ShardPlanRow(1, 10, 1, "in/1", "out/1")])
    with ledger.session() as session, session.begin():
        session.execute(update(Shard).where(Shard.shard_id == 0).values(status="done", attempts=1))
        session.execute(
            update(Shard)
            .where(Shard.shard_id == 1)
            .values(status="failed", attempts=3, error="ValueError: bad")
        )
        session.execute(update(Run).values(status="completed_with_failures", finished_at=utcnow()))
    yield ledger
    ledger.dispose()


def test_the_cost_table_is_plain_columns_on_a_pipe_and_a_rich_table_on_a_terminal() -> None:
    with pipe() as (stream, plain):
        show_cost_table(["model"], ROWS, stream)
    assert plain == [PLAIN_COST_TABLE]
    with terminal() as (stream, drawn):
        show_cost_table(["model"], ROWS, stream)
    [screen] = drawn
    assert "─" in screen and "$ per M pairs" in screen and "cost_per_million_pairs" not in screen
    assert "cohere:rerank-v3.5" in screen and "51,200" in screen and "4.6154" in screen
    assert "not priced: GPU hours on x" in screen
    assert "\x1b[1m" in screen  # styled: the header and the total row are bold


def test_a_terminal_too_narrow_for_the_cost_table_gets_the_plain_columns_rather_than_cut_ones() -> None:
    with terminal(columns=100) as (stream, drawn):
        show_cost_table(["model"], ROWS, stream)
    [screen] = drawn
    assert screen.replace("\r\n", "\n") == PLAIN_COST_TABLE


def test_the_run_summary_is_plain_lines_on_a_pipe_and_a_table_on_a_terminal(ledger: Ledger) -> None:
    with pipe() as (stream, plain):
        show_run_summary(ledger, "r1", stream)
    [text] = plain
    assert text.splitlines()[:5] == [
        "run r1: completed_with_failures",
        "  model        cross-encoder:m",
        "  corpus       /c.parquet",
        "  shards       1 done, 1 failed, 2 total",
        "  pairs        20 scored of 30 (3 queries)",
    ]
    assert "  failed shard 1 (3 attempts): ValueError: bad" in text.splitlines()
    with terminal() as (stream, drawn):
        show_run_summary(ledger, "r1", stream)
    [screen] = drawn
    assert "run r1" in screen and "completed_with_failures" in screen and "│" in screen
    assert "failed shards" in screen and "ValueError: bad" in screen
    assert "failed shard 1 (3 attempts)" not in screen  # the plain line is not what a terminal gets


def test_waiting_draws_a_live_bar_on_a_terminal_and_plain_lines_on_a_pipe(ledger: Ledger) -> None:
    with pipe() as (stream, plain):
        wait_for_run(ledger, "r1", poll_s=0.01, stream=stream)
    assert plain == ["[################........] 1/2 shards, 1 failed | 20/30 pairs | 0 pairs/s | ETA --\n"]
    with terminal() as (stream, drawn):
        wait_for_run(ledger, "r1", poll_s=0.01, stream=stream)
    [screen] = drawn
    assert "━" in screen and "#" not in screen  # rich's bar, not the plain one
    assert "run r1" in screen and "1/2 shards, 1 failed" in screen and "20/30 pairs" in screen
    assert "67%" in screen and "pairs/s" in screen
