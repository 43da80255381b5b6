"""Runs and their shards as the producer records them: creating a run with all its shards, (re-)enqueueing
shards, and reading runs and shards back. Each function works inside the caller's session."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.budget import OPTIONS_KEY as BUDGET_KEY
from core.budget import Budget
from storage.ledger.schema import Run, Shard
from storage.ledger.statuses import RunStatus, ShardStatus
from storage.ledger.types import ShardPlanRow, utcnow


def add_run(session: Session, run: Run, shards: Iterable[ShardPlanRow]) -> None:
    """Add a queued run and all its shards, queued with no attempts yet."""
    run.status = RunStatus.QUEUED
    session.add(run)
    session.flush()
    session.add_all(
        Shard(
            run_id=run.run_id,
            shard_id=row.shard_id,
            status=ShardStatus.QUEUED,
            pairs=row.pairs,
            queries=row.queries,
            input_path=row.input_path,
            output_path=row.output_path,
            attempts=0,
        )
        for row in shards
    )


def mark_enqueued(session: Session, run_id: str, shard_ids: list[int]) -> list[int]:
    """Mark these shards as (re-)sent to the broker, each with fresh tries, and return the ids marked.
    Done shards, and shards whose running attempt still renews its lease, are left alone: sending them
    again would only make a duplicate. A finished run that gets shards back is queued again."""
    if not shard_ids:
        return []
    now = utcnow()
    marked = session.scalars(
        update(Shard)
        .where(
            Shard.run_id == run_id,
            Shard.shard_id.in_(shard_ids),
            Shard.status != ShardStatus.DONE,
            or_(
                Shard.status != ShardStatus.RUNNING,
                Shard.lease_expires_at.is_(None),
                Shard.lease_expires_at < now,
            ),
        )
        .values(
            status=ShardStatus.QUEUED,
            enqueued_at=now,
            error=None,
            finished_at=None,
            lease_expires_at=None,
            attempts_base=Shard.attempts,
        )
        .returning(Shard.shard_id)
    ).all()
    if marked:
        session.execute(
            update(Run)
            .where(Run.run_id == run_id, Run.status != RunStatus.RUNNING)
            .values(status=RunStatus.QUEUED, finished_at=None)
        )
    return sorted(marked)


def latest_run_id(session: Session) -> str | None:
    return session.scalar(select(Run.run_id).order_by(Run.created_at.desc()).limit(1))


def latest_completed_run_id(session: Session, model: str) -> str | None:
    """The newest run of ``model`` that completed without failures."""
    return session.scalar(
        select(Run.run_id)
        .where(Run.model == model, Run.status == RunStatus.COMPLETED)
        .order_by(Run.created_at.desc())
        .limit(1)
    )


def set_budget(session: Session, run_id: str, budget: Budget) -> Run:
    """Record the run's new budget; a run paused by its old one goes on (``running``)."""
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        raise KeyError(run_id)
    run.options = {**run.options, BUDGET_KEY: budget.as_options()}
    if run.status == RunStatus.PAUSED_BUDGET:
        run.status = RunStatus.RUNNING
    return run


def runs_since(session: Session, since: datetime) -> list[Run]:
    """Runs created since ``since``, and every run still queued or running, oldest first."""
    unfinished = Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING])
    return list(
        session.scalars(select(Run).where(or_(Run.created_at >= since, unfinished)).order_by(Run.created_at))
    )


def stage_runs(session: Session, run_id: str) -> list[Run]:
    """The later stages of cascade ``run_id``, in stage order."""
    return list(session.scalars(select(Run).where(Run.cascade_of == run_id).order_by(Run.stage)))


def shadow_runs(session: Session, run_id: str) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.shadow_of == run_id).order_by(Run.created_at)))


def recent_runs(session: Session, model: str, before: datetime, limit: int) -> list[Run]:
    """Up to ``limit`` runs of ``model`` created before ``before``, newest first."""
    return list(
        session.scalars(
            select(Run)
            .where(Run.model == model, Run.created_at < before)
            .order_by(Run.created_at.desc())
            .limit(limit)
        )
    )


def record_canary_verdict(session: Session, run_id: str, verdict: dict[str, object], drifted: bool) -> Run:
    """Store the canary check's ``verdict`` in the run's options, once, and mark a completed run
    ``completed_with_drift`` when ``drifted``. Returns the run as it now is."""
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        raise KeyError(run_id)
    recorded = run.options.get("canary")
    canary: dict[str, object] = dict(recorded) if isinstance(recorded, dict) else {}
    if "verdict" in canary:  # another checker was first
        return run
    canary["verdict"] = verdict
    run.options = {**run.options, "canary": canary}  # a new dict, so that the JSON column is written
    if drifted and run.status == RunStatus.COMPLETED:
        run.status = RunStatus.COMPLETED_WITH_DRIFT
    return run


def run_shards(session: Session, run_id: str, statuses: Iterable[ShardStatus] | None = None) -> list[Shard]:
    """The run's shards in shard order, only those in ``statuses`` when given."""
    query = select(Shard).where(Shard.run_id == run_id).order_by(Shard.shard_id)
    if statuses is not None:
        query = query.where(Shard.status.in_(list(statuses)))
    return list(session.scalars(query))
