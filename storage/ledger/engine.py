"""Engine creation for the ledger: any SQLAlchemy URL, with SQLite made safe for concurrent workers."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

BUSY_TIMEOUT_S = 60.0
# How long a write transaction keeps asking for SQLite's write lock in all: SQLite's busy handler waits
# BUSY_TIMEOUT_S per try, and some lock states answer "database is locked" without calling it at all.
BEGIN_DEADLINE_S = 180.0
# An execution option that marks a connection's transactions read-only: on SQLite they begin deferred,
# so that readers (status polls, reports) never wait for, or hold up, the write lock.
READ_ONLY = "ledger_read_only"
# A worker whose host vanished mid-transaction would hold its row locks until the server noticed the dead
# connection (hours, by TCP defaults) and block every reaper meanwhile; ledger transactions are short.
IDLE_IN_TRANSACTION_S = 30.0
# libpq's TCP keepalives, so that a client notices a vanished server (and the server a vanished client)
# within a minute or so rather than hours.
POSTGRES_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def create_ledger_engine(url: str, idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S) -> Engine:
    """An engine for ``url``. SQLite gets WAL, a long busy timeout and ``BEGIN IMMEDIATE`` (retried while
    the database stays locked, up to ``BEGIN_DEADLINE_S``) so that several worker processes can write
    without "database is locked" errors; connections with the ``READ_ONLY`` execution option begin
    deferred transactions, which in WAL mode never wait for a writer. PostgreSQL sessions end
    a transaction left idle for ``idle_in_transaction_s`` (its locks with it) and use TCP keepalives."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        keepalives = {key: value for key, value in POSTGRES_KEEPALIVES.items() if key not in parsed.query}
        engine = create_engine(url, pool_pre_ping=True, future=True, connect_args=keepalives)

        @event.listens_for(engine, "connect")
        def _on_postgres_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            milliseconds = int(idle_in_transaction_s * 1000)
            cursor.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
            cursor.close()
            dbapi_connection.commit()

        return engine
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "isolation_level": None}, future=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        enable_wal(cursor, BUSY_TIMEOUT_S)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            # Take the write lock up front: a deferred transaction that reads and then writes can fail
            # with SQLITE_BUSY without waiting when another process committed in between.
            retry_while_locked(lambda: connection.exec_driver_sql("BEGIN IMMEDIATE"), BEGIN_DEADLINE_S)

    return engine


def enable_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch the database to write-ahead logging, waiting out other connections.

    SQLite answers a journal-mode change with "database is locked" at once, without its busy handler,
    when another connection is in the middle of one (workers starting together on a new ledger), so
    the change is retried here."""
    retry_while_locked(lambda: cursor.execute("PRAGMA journal_mode=WAL"), timeout_s)


def retry_while_locked(statement: Callable[[], object], timeout_s: float) -> None:
    """Run ``statement`` again, backing off, while SQLite answers that the database is busy, until
    ``timeout_s`` has passed; any other error, and the last "locked", propagate."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.005
    while True:
        try:
            statement()
            return
        except (sqlite3.OperationalError, OperationalError) as error:
            if not is_busy(error) or time.monotonic() + delay_s > deadline:
                raise
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.25)


def is_busy(error: Exception) -> bool:
    """Whether ``error`` (sqlite3's, or SQLAlchemy's wrapping of it) is SQLITE_BUSY."""
    cause = getattr(error, "orig", error)
    return isinstance(cause, sqlite3.OperationalError) and cause.sqlite_errorcode == sqlite3.SQLITE_BUSY
