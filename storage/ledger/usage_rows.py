"""The one writer of ``usage`` rows: an attempt's summary row and its API request rows.

Each shard attempt writes a summary row (``request_index`` 0: pairs scored, device and wall time, ok or
error) and, for API models, one row per HTTP request attempt (``request_index`` 1, 2, ...), failed ones
included, since they are billed. Tokens, requests, search units and cost of API models live on the
request rows only, and pairs and times on the summary rows, so any sum over ``usage`` counts each thing
once.

Rows are unique on (run, shard, attempt, request index) and a row already there is kept, so reporting an
attempt twice (a redelivered message, a retried ledger write) adds nothing. Both functions write inside
the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.usage import RequestUsage
from storage.ledger.schema import Usage
from storage.ledger.statuses import UsageOutcome
from storage.ledger.types import AttemptUsage, utcnow

SUMMARY_ROW = 0


def record_attempt_row(
    session: Session,
    run_id: str,
    shard_id: int,
    attempt: int,
    usage: AttemptUsage,
    outcome: UsageOutcome,
    started_at: datetime,
) -> bool:
    """Add the attempt's summary row unless it is already there; returns whether it was added."""
    row = Usage(
        run_id=run_id,
        shard_id=shard_id,
        attempt=attempt,
        request_index=SUMMARY_ROW,
        outcome=outcome,
        started_at=started_at,
        finished_at=utcnow(),
        **asdict(usage),
    )
    return _add_new_rows(session, run_id, shard_id, attempt, [row]) == 1


def record_request_rows(
    session: Session,
    run_id: str,
    shard_id: int,
    attempt: int,
    worker: str,
    model: str,
    requests: Sequence[RequestUsage],
) -> int:
    """Add one row per API request attempt not yet recorded for this shard attempt; returns how many."""
    rows = [_request_row(run_id, shard_id, attempt, worker, model, request) for request in requests]
    return _add_new_rows(session, run_id, shard_id, attempt, rows)


def _request_row(
    run_id: str, shard_id: int, attempt: int, worker: str, model: str, request: RequestUsage
) -> Usage:
    if request.request_index <= SUMMARY_ROW:
        raise ValueError(f"request rows count from 1 (0 is the attempt's row), got {request.request_index}")
    return Usage(
        run_id=run_id,
        shard_id=shard_id,
        attempt=attempt,
        request_index=request.request_index,
        worker=worker,
        model=model,
        device="api",
        provider=request.provider,
        outcome=UsageOutcome.of_request(request.outcome),
        pairs=request.pairs,
        tokens=request.tokens,
        requests=1,
        search_units=request.search_units,
        device_seconds=0.0,
        wall_seconds=request.wall_seconds,
        cost_usd=request.cost_usd,
        started_at=request.started_at,
        finished_at=request.finished_at,
    )


def _add_new_rows(session: Session, run_id: str, shard_id: int, attempt: int, rows: list[Usage]) -> int:
    """Add the rows of this attempt whose request index is not recorded yet; returns how many."""
    if not rows:
        return 0
    recorded = set(
        session.scalars(
            select(Usage.request_index).where(
                Usage.run_id == run_id,
                Usage.shard_id == shard_id,
                Usage.attempt == attempt,
                Usage.request_index.in_([row.request_index for row in rows]),
            )
        )
    )
    new = [row for row in rows if row.request_index not in recorded]
    session.add_all(new)
    return len(new)
