"""SQLite ledgers shared by worker processes that start together."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from storage.ledger import Ledger
from storage.ledger import engine as engine_module
from storage.ledger.engine import create_ledger_engine, retry_while_locked


def _connect_together(url: str, connections: int) -> list[BaseException]:
    """Open ``connections`` engines on ``url`` at the same moment, each writing once."""
    barrier = threading.Barrier(connections)
    errors: list[BaseException] = []
    engines: list[Engine] = [create_ledger_engine(url) for _ in range(connections)]

    def connect_and_write(engine: Engine) -> None:
        barrier.wait()
        try:
            with engine.begin() as conn:
                conn.execute(text("create table if not exists beats (worker integer)"))
                conn.execute(text("insert into beats values (1)"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=connect_and_write, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    return errors


def test_workers_opening_a_new_sqlite_ledger_together_all_get_in(tmp_path: Path) -> None:
    # The first connections to a new file race to switch it to WAL; SQLite refuses the losers at once
    # ("database is locked") instead of waiting, which used to stop a worker from starting.
    for attempt in range(25):
        url = f"sqlite:///{tmp_path / f'ledger-{attempt}.db'}"
        assert _connect_together(url, connections=4) == []
        engine = create_ledger_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
            assert conn.execute(text("select count(*) from beats")).scalar() == 4
        engine.dispose()


def test_readers_do_not_wait_for_a_writer_holding_the_sqlite_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.create_schema()
    writer = create_ledger_engine(url)
    with writer.begin() as held:  # BEGIN IMMEDIATE: the write lock, held while the reads run
        held.execute(text("select 1"))
        started = time.monotonic()
        assert ledger.latest_run_id() is None
        assert ledger.runs_since(datetime(2026, 1, 1, tzinfo=UTC)) == []
        assert time.monotonic() - started < 1.0
    writer.dispose()
    ledger.dispose()


def test_a_write_begun_while_sqlite_answers_locked_is_retried_until_the_lock_is_free(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("pragma journal_mode=wal")
    holder.execute("create table beats (worker integer)")
    holder.execute("begin immediate")
    waiter = sqlite3.connect(database, timeout=0, isolation_level=None)  # "locked" at once, no busy handler
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        waiter.execute("begin immediate")
    release = threading.Timer(0.3, holder.execute, args=("commit",))
    release.start()
    started = time.monotonic()
    retry_while_locked(lambda: waiter.execute("begin immediate"), timeout_s=10)
    assert 0.2 < time.monotonic() - started < 5
    waiter.execute("insert into beats values (1)")
    waiter.execute("commit")
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # a lock that outlasts the deadline
        holder.execute("begin immediate")
        retry_while_locked(lambda: waiter.execute("begin immediate"), timeout_s=0.2)
    release.join()
    holder.close()
    waiter.close()


def test_a_ledger_write_waits_out_a_lock_held_longer_than_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_S", 0.05)  # SQLite's own wait gives up at once
    database = tmp_path / "ledger.db"
    engine = create_ledger_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("create table beats (worker integer)"))
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("begin immediate")
    release = threading.Timer(0.5, holder.execute, args=("commit",))
    release.start()

    with engine.begin() as conn:  # BEGIN IMMEDIATE answered "locked" for 0.5 s, then retried in
        conn.execute(text("insert into beats values (1)"))

    release.join()
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from beats")).scalar() == 1
    holder.close()
    engine.dispose()
