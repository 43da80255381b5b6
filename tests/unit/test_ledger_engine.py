"""SQLite ledgers shared by worker processes that start together."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, text

from storage.ledger.engine import create_ledger_engine


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
