"""Run completion: a run ends when its last shard does, completed or completed with failures.

Called inside every transaction that can make a shard final (published, failed, given up), under the
shard's row lock, so exactly one of them closes the run."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.ledger.schema import Run, Shard
from storage.ledger.statuses import FINAL_SHARD_STATUSES, RunStatus, ShardStatus
from storage.ledger.types import utcnow


def close_run_if_finished(session: Session, run_id: str) -> bool:
    """Mark the run completed (with failures if any shard failed) once every shard is done or failed;
    returns whether this call closed it."""
    counts = dict(
        session.execute(
            select(Shard.status, func.count()).where(Shard.run_id == run_id).group_by(Shard.status)
        )
        .tuples()
        .all()
    )
    if any(status not in FINAL_SHARD_STATUSES for status in counts):
        return False
    status = RunStatus.COMPLETED_WITH_FAILURES if counts.get(ShardStatus.FAILED) else RunStatus.COMPLETED
    session.execute(update(Run).where(Run.run_id == run_id).values(status=status, finished_at=utcnow()))
    return True
