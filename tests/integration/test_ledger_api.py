"""The ledger's one API, on SQLite and PostgreSQL: one writer for every usage row (attempt summaries and
API request rows, each once), status columns that read back as their enums while stored as plain
strings, and reports over what the writer wrote."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import asdict

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import StatementError

from core.usage import RequestOutcome, RequestUsage
from storage.ledger import (
    AttemptUsage,
    Granted,
    Ledger,
    Run,
    RunStatus,
    ShardPlanRow,
    ShardStatus,
    Usage,
    UsageOutcome,
    utcnow,
)

MODEL = "cohere:rerank-v3.5"


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    yield ledger
    ledger.dispose()


def _new_run(ledger: Ledger, shards: int) -> str:
    run_id = f"api-{secrets.token_hex(4)}"
    run = Run(
        run_id=run_id,
        model=MODEL,
        queue="rerank.cohere",
        corpus_path="/c.parquet",
        n_shards=shards,
        n_pairs=10 * shards,
        n_queries=shards,
        options={},
        created_at=utcnow(),
    )
    ledger.create_run(run, [ShardPlanRow(i, 10, 1, f"in/{i}", f"out/{i}") for i in range(shards)])
    ledger.mark_enqueued(run_id, range(shards))
    return run_id


def _request(index: int, outcome: RequestOutcome, search_units: int, cost: float | None) -> RequestUsage:
    now = utcnow()
    return RequestUsage(
        request_index=index,
        provider="cohere",
        outcome=outcome,
        pairs=5,
        tokens=100 * search_units,
        output_tokens=0,
        search_units=search_units,
        cost_usd=cost,
        wall_seconds=0.25,
        started_at=now,
        finished_at=now,
    )


def _key(shard_id: int) -> str:
    return f"runs/r/_attempts/shard-{shard_id:05d}.attempt-1.parquet"


def test_one_writer_records_each_usage_row_once(ledger: Ledger) -> None:
    run_id = _new_run(ledger, shards=1)
    leases = ledger.leases(max_attempts=3, lease_s=60)
    grant = leases.acquire(run_id, 0, "api0@h")
    assert isinstance(grant, Granted)
    requests = [_request(1, RequestOutcome.RATE_LIMITED, 0, 0.0), _request(2, RequestOutcome.OK, 1, 0.002)]
    usage = AttemptUsage(worker="api0@h", model=MODEL, device="api", pairs=10, wall_seconds=2.5)

    assert ledger.record_requests(run_id, 0, grant.attempt, "api0@h", MODEL, requests) == 2
    assert leases.publish(run_id, 0, grant.attempt, usage, utcnow(), _key(0))
    # The same attempt reported again (a redelivered message, a retried write) adds nothing.
    assert ledger.record_requests(run_id, 0, grant.attempt, "api0@h", MODEL, requests) == 0
    assert not leases.publish(run_id, 0, grant.attempt, usage, utcnow(), _key(0))

    with ledger.session() as session:
        query = select(Usage).where(Usage.run_id == run_id).order_by(Usage.request_index)
        rows = list(session.scalars(query))
    assert [(row.request_index, row.outcome, row.device, row.requests) for row in rows] == [
        (0, UsageOutcome.OK, "api", 0),
        (1, UsageOutcome.RATE_LIMITED, "api", 1),
        (2, UsageOutcome.OK, "api", 1),
    ]
    summary = rows[0]
    assert {field: getattr(summary, field) for field in asdict(usage)} == asdict(usage)
    totals = ledger.usage_totals(run_id)
    assert (totals.attempts, totals.failed_attempts, totals.pairs, totals.tokens) == (1, 0, 10, 100)
    api = ledger.api_usage_totals(run_id)
    assert (api.requests, api.failed_requests, api.search_units) == (2, 1, 1)
    assert api.cost_usd == pytest.approx(0.002)


def test_request_rows_count_from_one(ledger: Ledger) -> None:
    run_id = _new_run(ledger, shards=1)
    with pytest.raises(ValueError, match="count from 1"):
        ledger.record_requests(run_id, 0, 1, "w", MODEL, [_request(0, RequestOutcome.OK, 1, None)])
    assert ledger.api_usage_totals(run_id).requests == 0
    assert ledger.record_requests(run_id, 0, 1, "w", MODEL, []) == 0


def test_status_columns_read_back_as_enums_and_are_stored_as_strings(ledger: Ledger) -> None:
    run_id = _new_run(ledger, shards=2)
    leases = ledger.leases(max_attempts=1, lease_s=60)
    usage = AttemptUsage(worker="w", model=MODEL, device="cpu", pairs=10)
    for shard_id in range(2):
        grant = leases.acquire(run_id, shard_id, "w")
        assert isinstance(grant, Granted)
        if shard_id == 0:
            leases.publish(run_id, shard_id, grant.attempt, usage, utcnow(), _key(shard_id))
        else:
            leases.fail(run_id, shard_id, grant.attempt, usage, utcnow(), "ValueError: boom", final=True)

    run = ledger.get_run(run_id)
    assert run is not None and type(run.status) is RunStatus
    assert run.status is RunStatus.COMPLETED_WITH_FAILURES
    assert ledger.progress(run_id).status is RunStatus.COMPLETED_WITH_FAILURES
    assert [shard.status for shard in ledger.shards(run_id)] == [ShardStatus.DONE, ShardStatus.FAILED]
    assert all(type(shard.status) is ShardStatus for shard in ledger.shards(run_id))
    assert [shard.shard_id for shard in ledger.shards(run_id, statuses=[ShardStatus.FAILED])] == [1]
    with ledger.session() as session:
        outcomes = session.scalars(select(Usage.outcome).where(Usage.run_id == run_id)).all()
        assert sorted(outcomes) == [UsageOutcome.ERROR, UsageOutcome.OK]
        assert all(type(outcome) is UsageOutcome for outcome in outcomes)
        raw_run = session.execute(text("select status from runs where run_id = :r"), {"r": run_id}).scalar()
        raw_shards = session.execute(
            text("select status from shards where run_id = :r order by shard_id"), {"r": run_id}
        ).scalars()
        raw_outcomes = session.execute(
            text("select outcome from usage where run_id = :r order by shard_id"), {"r": run_id}
        ).scalars()
        assert (raw_run, list(raw_shards), list(raw_outcomes)) == (
            "completed_with_failures",
            ["done", "failed"],
            ["ok", "error"],
        )


def test_a_status_outside_its_enum_is_refused(ledger: Ledger) -> None:
    run_id = _new_run(ledger, shards=1)
    with pytest.raises(StatementError, match="finished"), ledger.session() as session, session.begin():
        session.execute(update(Run).where(Run.run_id == run_id).values(status="finished"))
    run = ledger.get_run(run_id)
    assert run is not None and run.status is RunStatus.QUEUED


def test_a_recorded_run_starts_queued(ledger: Ledger) -> None:
    run_id = _new_run(ledger, shards=3)
    progress = ledger.progress(run_id)
    assert (progress.status, progress.shards_total, progress.pairs_total) == (RunStatus.QUEUED, 3, 30)
    assert ledger.latest_completed_run(MODEL) != run_id
    assert {shard.status for shard in ledger.shards(run_id)} == {ShardStatus.QUEUED}
