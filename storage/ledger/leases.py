"""The worker side of the ledger: leases on shards, fenced publication, failures and reaping.

Celery with Redis delivers a shard at least once: a worker that vanished, or a shard that outlived the
visibility timeout, comes back while the first copy may still run. Every attempt therefore takes a
lease in the ledger. Its number is the fencing token: only the holder of the newest attempt, with its
lease unexpired, may publish the shard's file and mark it done, and it does both inside one locked
transaction, so a duplicate delivery neither doubles rows nor lets a stale attempt overwrite a newer
one. Usage is recorded for every attempt, once (unique on run, shard, attempt, request index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.ledger import Ledger
from storage.ledger.schema import Run, Shard, Usage
from storage.ledger.types import FINAL_SHARD_STATUSES, AttemptUsage, RunStatus, ShardStatus, utcnow


@dataclass(frozen=True)
class Granted:
    """This worker holds attempt ``attempt``; ``final_try`` means no retry follows a failure."""

    attempt: int
    final_try: bool


@dataclass(frozen=True)
class Busy:
    """Another attempt holds a live lease; look again in ``retry_in_s`` seconds."""

    retry_in_s: float


@dataclass(frozen=True)
class Closed:
    """The shard is done, failed or unknown: nothing to do."""

    status: str


Grant = Granted | Busy | Closed

# The outcome of an attempt row whose attempt stopped scoring once a newer attempt took its lease.
LEASE_LOST = "lease_lost"


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for timezone-aware columns; they are stored in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=utcnow().tzinfo)


class ShardLeases:
    def __init__(self, ledger: Ledger, max_attempts: int, lease_s: float) -> None:
        self.ledger = ledger
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_s)

    def acquire(self, run_id: str, shard_id: int, worker: str) -> Grant:
        """Start a new attempt unless the shard is closed or another attempt's lease is alive. A shard
        whose tries are used up (its workers kept dying) is marked failed here."""
        now = utcnow()
        with self.ledger.session() as session, session.begin():
            shard = session.get(Shard, (run_id, shard_id), with_for_update=True)
            if shard is None:
                return Closed("unknown")
            if shard.status in FINAL_SHARD_STATUSES:
                return Closed(shard.status)
            lease_end = _aware(shard.lease_expires_at)
            if shard.status == ShardStatus.RUNNING and lease_end is not None and lease_end > now:
                return Busy((lease_end - now).total_seconds() + 1.0)
            if shard.attempts - shard.attempts_base >= self.max_attempts:
                shard.status = ShardStatus.FAILED
                shard.error = shard.error or f"gave up after {self.max_attempts} attempts (worker lost)"
                shard.finished_at = now
                shard.lease_expires_at = None
                close_run_if_finished(session, run_id)
                return Closed(ShardStatus.FAILED)
            shard.attempts += 1
            shard.status = ShardStatus.RUNNING
            shard.worker = worker
            shard.started_at = now
            shard.finished_at = None
            shard.lease_expires_at = now + self.lease
            session.execute(
                update(Run)
                .where(Run.run_id == run_id, Run.status == RunStatus.QUEUED)
                .values(status=RunStatus.RUNNING)
            )
            return Granted(shard.attempts, shard.attempts - shard.attempts_base >= self.max_attempts)

    def renew(self, run_id: str, shard_id: int, attempt: int) -> bool:
        """Extend the lease of ``attempt``; False when it no longer holds the shard."""
        with self.ledger.session() as session, session.begin():
            result = session.execute(
                update(Shard)
                .where(*_held_by(run_id, shard_id, attempt))
                .values(lease_expires_at=utcnow() + self.lease)
            )
            return result.rowcount == 1

    def publish(
        self,
        run_id: str,
        shard_id: int,
        attempt: int,
        usage: AttemptUsage,
        started_at: datetime,
        publish_file: Callable[[], None],
    ) -> bool:
        """If ``attempt`` still holds the shard, call ``publish_file`` (an atomic rename) and mark the
        shard done, under the shard's row lock. Usage is recorded either way. Returns whether it held."""
        with self.ledger.session() as session, session.begin():
            record_attempt_usage(session, run_id, shard_id, attempt, usage, "ok", started_at)
            shard = session.get(Shard, (run_id, shard_id), with_for_update=True)
            holds = shard is not None and shard.attempts == attempt and shard.status == ShardStatus.RUNNING
            if holds and shard is not None:
                publish_file()
                shard.status = ShardStatus.DONE
                shard.finished_at = utcnow()
                shard.error = None
                shard.lease_expires_at = None
                close_run_if_finished(session, run_id)
            return holds

    def fail(
        self,
        run_id: str,
        shard_id: int,
        attempt: int,
        usage: AttemptUsage,
        started_at: datetime,
        error: str,
        final: bool,
    ) -> None:
        """Record a failed attempt: with ``final`` the shard is marked failed, else queued for a retry."""
        with self.ledger.session() as session, session.begin():
            record_attempt_usage(session, run_id, shard_id, attempt, usage, "error", started_at)
            session.execute(
                update(Shard)
                .where(*_held_by(run_id, shard_id, attempt))
                .values(
                    status=ShardStatus.FAILED if final else ShardStatus.QUEUED,
                    error=error[:4000],
                    finished_at=utcnow() if final else None,
                    lease_expires_at=None,
                )
            )
            close_run_if_finished(session, run_id)

    def superseded(
        self, run_id: str, shard_id: int, attempt: int, usage: AttemptUsage, started_at: datetime
    ) -> None:
        """Record the usage of an attempt that stopped scoring because a newer attempt took over its
        lease (outcome ``lease_lost``). The shard belongs to the newer attempt, so it is left alone."""
        with self.ledger.session() as session, session.begin():
            record_attempt_usage(session, run_id, shard_id, attempt, usage, LEASE_LOST, started_at)

    def expired(self, limit: int = 100) -> list[Shard]:
        """Shards whose attempt stopped renewing its lease: its worker died."""
        with self.ledger.session() as session:
            query = (
                select(Shard)
                .where(Shard.status == ShardStatus.RUNNING, Shard.lease_expires_at < utcnow())
                .limit(limit)
            )
            return list(session.scalars(query))

    def requeue_expired(self, run_id: str, shard_id: int, attempt: int) -> bool:
        """Move an expired attempt's shard back to queued (once, whoever asks first)."""
        with self.ledger.session() as session, session.begin():
            result = session.execute(
                update(Shard)
                .where(
                    Shard.run_id == run_id,
                    Shard.shard_id == shard_id,
                    Shard.attempts == attempt,
                    Shard.status == ShardStatus.RUNNING,
                    Shard.lease_expires_at < utcnow(),
                )
                .values(status=ShardStatus.QUEUED, lease_expires_at=None, enqueued_at=utcnow())
            )
            return result.rowcount == 1


def _held_by(run_id: str, shard_id: int, attempt: int) -> tuple[object, ...]:
    return (
        Shard.run_id == run_id,
        Shard.shard_id == shard_id,
        Shard.attempts == attempt,
        Shard.status == ShardStatus.RUNNING,
    )


def record_attempt_usage(
    session: Session,
    run_id: str,
    shard_id: int,
    attempt: int,
    usage: AttemptUsage,
    outcome: str,
    started_at: datetime,
) -> None:
    """Insert the attempt's summary row unless it is already there (a repeated report)."""
    exists = session.scalar(
        select(func.count())
        .select_from(Usage)
        .where(
            Usage.run_id == run_id,
            Usage.shard_id == shard_id,
            Usage.attempt == attempt,
            Usage.request_index == 0,
        )
    )
    if exists:
        return
    session.add(
        Usage(
            run_id=run_id,
            shard_id=shard_id,
            attempt=attempt,
            request_index=0,
            worker=usage.worker,
            model=usage.model,
            device=usage.device,
            outcome=outcome,
            pairs=usage.pairs,
            tokens=usage.tokens,
            requests=usage.requests,
            search_units=usage.search_units,
            device_seconds=usage.device_seconds,
            wall_seconds=usage.wall_seconds,
            started_at=started_at,
            finished_at=utcnow(),
        )
    )


def close_run_if_finished(session: Session, run_id: str) -> None:
    counts = dict(
        session.execute(
            select(Shard.status, func.count()).where(Shard.run_id == run_id).group_by(Shard.status)
        ).all()
    )
    if any(status not in FINAL_SHARD_STATUSES for status in counts):
        return
    status = RunStatus.COMPLETED_WITH_FAILURES if counts.get(ShardStatus.FAILED) else RunStatus.COMPLETED
    session.execute(update(Run).where(Run.run_id == run_id).values(status=status, finished_at=utcnow()))
