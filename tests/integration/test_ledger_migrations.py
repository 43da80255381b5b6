"""A ledger from an older version upgrades in place, keeping its data."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.ledger import Ledger, RunStatus, ShardStatus, UsageOutcome
from storage.ledger.schema import Base, Usage
from storage.ledger.upgrade import current_revision, upgrade


def _old_rows(ledger: Ledger, run_id: str) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "insert into runs (run_id, model, queue, corpus_path, status, n_shards, n_pairs,"
                " n_queries, options, created_at)"
                " values (:r, 'cross-encoder:m', 'q', '/c', 'completed', 1, 5, 1, '{}', :t)"
            ),
            {"r": run_id, "t": now},
        )
        conn.execute(
            text(
                "insert into shards (run_id, shard_id, status, pairs, queries, input_path, output_path,"
                " attempts) values (:r, 0, 'done', 5, 1, 'in', 'out', 1)"
            ),
            {"r": run_id},
        )
        conn.execute(
            text(
                "insert into usage (run_id, shard_id, attempt, worker, model, device, outcome, pairs, tokens,"
                " requests, search_units, device_seconds, wall_seconds, started_at, finished_at)"
                " values (:r, 0, 1, 'w', 'cross-encoder:m', 'cpu', 'ok', 5, 70, 0, 0, 1.5, 2.0, :t, :t)"
            ),
            {"r": run_id, "t": now},
        )


def test_first_release_ledger_upgrades_in_place(fresh_ledger_url: str) -> None:
    ledger = Ledger(fresh_ledger_url)
    upgrade(ledger.engine, "0001")
    run_id = f"old-{datetime.now(UTC).timestamp()}"
    _old_rows(ledger, run_id)
    ledger.create_schema()
    assert current_revision(ledger.engine) == "0006"
    columns = {c["name"] for c in inspect(ledger.engine).get_columns("usage")}
    assert {"request_index", "provider", "cost_usd"} <= columns
    [shard] = ledger.shards(run_id)
    assert (shard.status, shard.attempts, shard.attempts_base, shard.lease_expires_at) == ("done", 1, 0, None)
    # Statuses written as plain strings by the first release read back as their enums.
    assert shard.status is ShardStatus.DONE
    assert ledger.progress(run_id).status is RunStatus.COMPLETED
    with ledger.session() as session:
        assert session.query(Usage.outcome).filter(Usage.run_id == run_id).scalar() is UsageOutcome.OK
    totals = ledger.usage_totals(run_id)
    assert (totals.attempts, totals.pairs, totals.tokens) == (1, 5, 70)
    ledger.create_schema()  # idempotent
    ledger.dispose()


def test_ledger_made_before_migrations_existed(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(ledger.engine, "0001")
    with ledger.engine.begin() as conn:
        conn.execute(text("drop table alembic_version"))  # as the first release's create_all left it
    _old_rows(ledger, "pre-alembic")
    ledger.create_schema()
    assert current_revision(ledger.engine) == "0006"
    assert ledger.progress("pre-alembic").pairs_done == 5


def test_unversioned_ledger_at_the_latest_schema_is_only_stamped(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text("drop table alembic_version"))
    ledger.create_schema()
    assert current_revision(ledger.engine) == "0006"


def test_the_migrations_make_the_schema_the_tables_map(fresh_ledger_url: str) -> None:
    """Alembic finds nothing to change between the migrated ledger and ``schema``: the enum-typed status
    columns are the plain strings the migrations made."""
    ledger = Ledger(fresh_ledger_url)
    ledger.create_schema()
    with ledger.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    ledger.dispose()
