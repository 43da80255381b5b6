"""API request rows in the ledger: one per request attempt, idempotent, and sums that count once."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from core.usage import RequestOutcome, RequestUsage
from storage.ledger import Ledger, Run, ShardPlanRow, Usage, utcnow


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    yield ledger
    ledger.dispose()


def _run(ledger: Ledger) -> str:
    run_id = f"api-{secrets.token_hex(4)}"
    run = Run(
        run_id=run_id,
        model="cohere:rerank-v3.5",
        queue="rerank.cohere",
        corpus_path="/c.parquet",
        status="queued",
        n_shards=1,
        n_pairs=10,
        n_queries=1,
        options={},
        created_at=utcnow(),
    )
    ledger.create_run(run, [ShardPlanRow(0, 10, 1, "in/0", "out/0")])
    return run_id


def _request(
    index: int, outcome: RequestOutcome, tokens: int, units: int, cost: float | None
) -> RequestUsage:
    now = utcnow()
    return RequestUsage(
        request_index=index,
        provider="cohere",
        outcome=outcome,
        pairs=5,
        tokens=tokens,
        output_tokens=0,
        search_units=units,
        cost_usd=cost,
        wall_seconds=0.1,
        started_at=now,
        finished_at=now,
    )


def test_request_rows_are_recorded_once_and_summed_without_double_counting(ledger: Ledger) -> None:
    run_id = _run(ledger)
    requests = [
        _request(1, RequestOutcome.RATE_LIMITED, 0, 0, 0.0),
        _request(2, RequestOutcome.OK, 120, 1, 0.002),
        _request(3, RequestOutcome.OK, 80, 1, 0.002),
    ]
    assert ledger.record_requests(run_id, 0, 1, "api0@h", "cohere:rerank-v3.5", requests[:2]) == 2
    # Reported again (a retried ledger write), plus the third: only the new row is added.
    assert ledger.record_requests(run_id, 0, 1, "api0@h", "cohere:rerank-v3.5", requests) == 1
    # The attempt's own row (request_index 0), written the way the shard runner writes it for API models.
    with ledger.session() as session, session.begin():
        session.add(
            Usage(
                run_id=run_id,
                shard_id=0,
                attempt=1,
                request_index=0,
                worker="api0@h",
                model="cohere:rerank-v3.5",
                device="api",
                outcome="ok",
                pairs=10,
                tokens=0,
                wall_seconds=2.0,
                started_at=utcnow(),
                finished_at=utcnow(),
            )
        )
    totals = ledger.usage_totals(run_id)
    assert (totals.attempts, totals.failed_attempts, totals.pairs, totals.tokens) == (1, 0, 10, 200)
    assert totals.wall_seconds == pytest.approx(2.0)
    api = ledger.api_usage_totals(run_id)
    assert (api.requests, api.failed_requests, api.tokens, api.search_units) == (3, 1, 200, 2)
    assert api.cost_usd == pytest.approx(0.004)
    with ledger.session() as session:
        rows = session.query(Usage).where(Usage.run_id == run_id, Usage.request_index > 0).all()
    assert sorted((row.request_index, row.outcome, row.device, row.requests) for row in rows) == [
        (1, "rate_limited", "api", 1),
        (2, "ok", "api", 1),
        (3, "ok", "api", 1),
    ]


def test_unknown_cost_stays_unknown(ledger: Ledger) -> None:
    run_id = _run(ledger)
    assert ledger.record_requests(run_id, 0, 1, "w", "m", []) == 0
    ledger.record_requests(run_id, 0, 1, "w", "m", [_request(1, RequestOutcome.OK, 10, 0, None)])
    assert ledger.api_usage_totals(run_id).cost_usd is None
