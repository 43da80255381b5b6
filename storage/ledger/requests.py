"""The ledger's API request rows: one ``usage`` row per HTTP request attempt (``request_index`` 1, 2, ...)
beside the attempt's own row (``request_index`` 0).

Tokens, requests, search units and cost live on the request rows only; pairs and times are summed
over the attempt rows. So any sum over ``usage`` counts each thing once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from core.usage import RequestOutcome, RequestUsage
from storage.ledger.schema import Usage

if TYPE_CHECKING:
    from storage.ledger import Ledger


@dataclass(frozen=True)
class ApiUsageTotals:
    """What a run's API requests consumed; ``cost_usd`` is None when no request had a known price."""

    requests: int
    failed_requests: int
    tokens: int
    search_units: int
    cost_usd: float | None


def request_row(
    run_id: str, shard_id: int, attempt: int, worker: str, model: str, request: RequestUsage
) -> Usage:
    if request.request_index < 1:
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
        outcome=str(request.outcome),
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


def record_request_rows(
    ledger: Ledger,
    run_id: str,
    shard_id: int,
    attempt: int,
    worker: str,
    model: str,
    requests: Sequence[RequestUsage],
) -> int:
    """Insert the rows of ``requests`` not yet recorded for this attempt; returns how many were added."""
    if not requests:
        return 0
    with ledger.session() as session, session.begin():
        recorded = set(
            session.scalars(
                select(Usage.request_index).where(
                    Usage.run_id == run_id,
                    Usage.shard_id == shard_id,
                    Usage.attempt == attempt,
                    Usage.request_index > 0,
                )
            )
        )
        rows = [
            request_row(run_id, shard_id, attempt, worker, model, request)
            for request in requests
            if request.request_index not in recorded
        ]
        session.add_all(rows)
        return len(rows)


def api_usage_totals(ledger: Ledger, run_id: str) -> ApiUsageTotals:
    is_request = Usage.request_index > 0
    with ledger.session() as session:
        requests, tokens, search_units, cost = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(Usage.tokens), 0),
                func.coalesce(func.sum(Usage.search_units), 0),
                func.sum(Usage.cost_usd),
            ).where(Usage.run_id == run_id, is_request)
        ).one()
        failed = session.scalar(
            select(func.count())
            .select_from(Usage)
            .where(Usage.run_id == run_id, is_request, Usage.outcome != RequestOutcome.OK.value)
        )
    return ApiUsageTotals(
        requests=int(requests),
        failed_requests=int(failed or 0),
        tokens=int(tokens),
        search_units=int(search_units),
        cost_usd=None if cost is None else float(cost),
    )
