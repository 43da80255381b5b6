"""A run's progress and usage totals, as ``status``, ``--wait`` and the run summary show them, and a model's
measured speed, which sizes the shards of its next run. Each function reads inside the caller's session."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from storage.ledger.schema import Run, Shard, Usage
from storage.ledger.statuses import ShardStatus, UsageOutcome
from storage.ledger.types import ApiUsageTotals, MeasuredSpeed, RunProgress, UsageTotals
from storage.ledger.usage_rows import SUMMARY_ROW


def run_progress(session: Session, run_id: str) -> RunProgress:
    """Shards and pairs done and failed so far; raises ``KeyError`` for an unknown run."""
    run = session.get(Run, run_id)
    if run is None:
        raise KeyError(run_id)
    rows = session.execute(
        select(Shard.status, func.count(), func.coalesce(func.sum(Shard.pairs), 0))
        .where(Shard.run_id == run_id)
        .group_by(Shard.status)
    ).tuples()
    by_status = {status: (int(n), int(pairs)) for status, n, pairs in rows}
    done, pairs_done = by_status.get(ShardStatus.DONE, (0, 0))
    failed, _ = by_status.get(ShardStatus.FAILED, (0, 0))
    return RunProgress(
        run_id=run_id,
        status=run.status,
        shards_total=run.n_shards,
        shards_done=done,
        shards_failed=failed,
        pairs_total=run.n_pairs,
        pairs_done=pairs_done,
        created_at=run.created_at,
    )


def spent(session: Session, run_id: str) -> tuple[float, int]:
    """What the run has used so far, as recorded: API cost (USD) and tokens, failed attempts included."""
    return _cost_and_tokens(session, Usage.run_id == run_id)


def spent_on(session: Session, day: date, name: str) -> tuple[float, int]:
    """The API cost (USD) and tokens recorded on ``day`` (UTC) for model ``name`` (``kind:name``) or
    provider ``name`` (the kind), whatever the run."""
    start = datetime.combine(day, time.min, UTC)
    return _cost_and_tokens(
        session,
        Usage.finished_at >= start,
        Usage.finished_at < start + timedelta(days=1),
        or_(Usage.model == name, Usage.provider == name),
    )


def _cost_and_tokens(session: Session, *where: ColumnElement[bool]) -> tuple[float, int]:
    cost, tokens = session.execute(
        select(func.coalesce(func.sum(Usage.cost_usd), 0.0), func.coalesce(func.sum(Usage.tokens), 0)).where(
            *where
        )
    ).one()
    return float(cost or 0.0), int(tokens or 0)


def usage_totals(session: Session, run_id: str) -> UsageTotals:
    """Attempts, pairs and times from the attempts' summary rows; tokens from every row, since API
    models keep theirs on the request rows only."""
    summary_row = Usage.request_index == SUMMARY_ROW
    attempts, pairs, device_s, wall_s, workers = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Usage.pairs), 0),
            func.coalesce(func.sum(Usage.device_seconds), 0.0),
            func.coalesce(func.sum(Usage.wall_seconds), 0.0),
            func.count(func.distinct(Usage.worker)),
        ).where(Usage.run_id == run_id, summary_row)
    ).one()
    tokens = session.scalar(select(func.coalesce(func.sum(Usage.tokens), 0)).where(Usage.run_id == run_id))
    truncated, checked = session.execute(
        select(
            func.coalesce(func.sum(Usage.truncated_pairs), 0),
            func.coalesce(func.sum(Usage.pairs), 0),
        ).where(Usage.run_id == run_id, summary_row, Usage.truncated_pairs.is_not(None))
    ).one()
    failed = session.scalar(
        select(func.count())
        .select_from(Usage)
        .where(Usage.run_id == run_id, summary_row, Usage.outcome != UsageOutcome.OK)
    )
    devices = session.scalars(
        select(Usage.device).where(Usage.run_id == run_id, summary_row).distinct().order_by(Usage.device)
    )
    return UsageTotals(
        attempts=int(attempts),
        failed_attempts=int(failed or 0),
        pairs=int(pairs),
        tokens=int(tokens or 0),
        device_seconds=float(device_s),
        wall_seconds=float(wall_s),
        workers=int(workers),
        truncated_pairs=int(truncated or 0),
        pairs_checked=int(checked),
        devices=tuple(devices),
    )


def api_usage_totals(session: Session, run_id: str) -> ApiUsageTotals:
    """Requests, tokens, search units and cost from the run's API request rows."""
    request_row = Usage.request_index > SUMMARY_ROW
    requests, tokens, search_units, cost = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Usage.tokens), 0),
            func.coalesce(func.sum(Usage.search_units), 0),
            func.sum(Usage.cost_usd),
        ).where(Usage.run_id == run_id, request_row)
    ).one()
    failed = session.scalar(
        select(func.count())
        .select_from(Usage)
        .where(Usage.run_id == run_id, request_row, Usage.outcome != UsageOutcome.OK)
    )
    return ApiUsageTotals(
        requests=int(requests),
        failed_requests=int(failed or 0),
        tokens=int(tokens),
        search_units=int(search_units),
        cost_usd=None if cost is None else float(cost),
    )


def measured_speed(session: Session, model: str, recent: int) -> MeasuredSpeed | None:
    """Pairs and device seconds of ``model``'s ``recent`` latest successful attempts that timed their
    device (local models); None when there are none."""
    latest = (
        select(Usage.pairs, Usage.device_seconds)
        .where(
            Usage.model == model,
            Usage.request_index == SUMMARY_ROW,
            Usage.outcome == UsageOutcome.OK,
            Usage.device_seconds > 0,
            Usage.pairs > 0,
        )
        .order_by(Usage.finished_at.desc())
        .limit(recent)
        .subquery()
    )
    attempts, pairs, seconds = session.execute(
        select(func.count(), func.coalesce(func.sum(latest.c.pairs), 0), func.sum(latest.c.device_seconds))
    ).one()
    if not attempts or not seconds:
        return None
    return MeasuredSpeed(attempts=int(attempts), pairs=int(pairs), device_seconds=float(seconds))
