"""The worker side of the ledger: leases on shards, fenced publication, failures and reaping.

Celery with Redis delivers a shard at least once: a worker that vanished, or a shard that outlived the
visibility timeout, comes back while the first copy may still run. Every attempt therefore takes a
lease in the ledger. Its number is the fencing token: only the holder of the newest attempt, with its
lease unexpired, may publish the shard and mark it done: inside one locked transaction it records which
attempt's scores file is the shard's (each attempt writes its own, so nothing needs an atomic rename and
object stores work), so a duplicate delivery neither doubles rows nor lets a stale attempt replace the
chosen file. Every attempt's summary usage row is written here, once, through ``usage_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.budget import Budget
from storage.ledger.completion import close_run_if_finished
from storage.ledger.schema import Run, Shard
from storage.ledger.statuses import FINAL_SHARD_STATUSES, RunStatus, ShardStatus, UsageOutcome
from storage.ledger.types import AttemptUsage, utcnow
from storage.ledger.usage_rows import record_attempt_row

PAUSED_BY = "paused_by"  # the run option saying which limit paused it


class Publication(IntEnum):
    """What ``publish`` did; false only where another attempt holds the shard."""

    SUPERSEDED = 0  # nothing recorded as the shard's scores
    PUBLISHED = 1
    CLOSED_RUN = 2  # published, and the run's last open shard: the run is finished


@dataclass(frozen=True)
class Granted:
    """This worker holds attempt ``attempt``; ``final_try`` means no retry follows a failure."""

    attempt: int
    final_try: bool
    budget: Budget = field(default_factory=Budget)  # the run's, which the worker enforces as it scores


@dataclass(frozen=True)
class Busy:
    """Another attempt holds a live lease; look again in ``retry_in_s`` seconds."""

    retry_in_s: float


@dataclass(frozen=True)
class Closed:
    """The shard is done, failed or unknown: nothing to do."""

    status: str


Grant = Granted | Busy | Closed


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for timezone-aware columns; they are stored in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=utcnow().tzinfo)


class ShardLeases:
    """The attempts at shards: each takes a lease, renews it while it scores, and publishes or fails
    under it. Made by ``Ledger.leases``; every method is one short transaction."""

    def __init__(
        self, sessions: sessionmaker[Session], reads: sessionmaker[Session], max_attempts: int, lease_s: float
    ) -> None:
        self._sessions = sessions
        self._reads = reads  # for queries that only read
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_s)

    def acquire(self, run_id: str, shard_id: int, worker: str, budgeted: bool = False) -> Grant:
        """Start a new attempt unless the shard is closed or another attempt's lease is alive. A shard
        whose tries are used up (its workers kept dying) is marked failed here. For a ``budgeted`` run it
        also reads the run: a paused one's shard is not leased, and the grant carries the budget."""
        now = utcnow()
        with self._sessions() as session, session.begin():
            shard = session.get(Shard, (run_id, shard_id), with_for_update=True)
            if shard is None:
                return Closed("unknown")
            if shard.status in FINAL_SHARD_STATUSES:
                return Closed(shard.status)
            run = session.get(Run, run_id) if budgeted else None
            if run is not None and run.status == RunStatus.PAUSED_BUDGET:
                return Closed(RunStatus.PAUSED_BUDGET)  # --resume sends the shard again
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
            budget = Budget.from_options(run.options if run is not None else None)
            return Granted(shard.attempts, shard.attempts - shard.attempts_base >= self.max_attempts, budget)

    def renew(self, run_id: str, shard_id: int, attempt: int) -> bool:
        """Extend the lease of ``attempt``; False when it no longer holds the shard."""
        with self._sessions() as session, session.begin():
            renewed = session.scalar(
                update(Shard)
                .where(*_held_by(run_id, shard_id, attempt))
                .values(lease_expires_at=utcnow() + self.lease)
                .returning(Shard.shard_id)
            )
            return renewed is not None

    def publish(
        self,
        run_id: str,
        shard_id: int,
        attempt: int,
        usage: AttemptUsage,
        started_at: datetime,
        scores_path: str,
    ) -> Publication:
        """If ``attempt`` still holds the shard, record ``scores_path`` (its complete scores file) as the
        shard's scores and mark it done, under the shard's row lock. Usage is recorded either way.
        Returns whether it held (true) and whether that closed the run; only one attempt of a shard
        ever holds."""
        with self._sessions() as session, session.begin():
            record_attempt_row(session, run_id, shard_id, attempt, usage, UsageOutcome.OK, started_at)
            shard = session.get(Shard, (run_id, shard_id), with_for_update=True)
            holds = shard is not None and shard.attempts == attempt and shard.status == ShardStatus.RUNNING
            if not holds or shard is None:
                return Publication.SUPERSEDED
            shard.scores_path = scores_path
            shard.status = ShardStatus.DONE
            shard.finished_at = utcnow()
            shard.error = None
            shard.lease_expires_at = None
            closed = close_run_if_finished(session, run_id)
            return Publication.CLOSED_RUN if closed else Publication.PUBLISHED

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
        with self._sessions() as session, session.begin():
            record_attempt_row(session, run_id, shard_id, attempt, usage, UsageOutcome.ERROR, started_at)
            session.execute(
                update(Shard)
                .where(*_held_by(run_id, shard_id, attempt))
                .values(
                    status=ShardStatus.FAILED if final else ShardStatus.QUEUED,
                    error=error[:4000],
                    finished_at=utcnow() if final else None,
                    lease_expires_at=None,
                    # A retry is on its way: a shard counts as waiting for its message from now.
                    enqueued_at=Shard.enqueued_at if final else utcnow(),
                )
            )
            close_run_if_finished(session, run_id)

    def pause_for_budget(
        self, run_id: str, shard_id: int, attempt: int, usage: AttemptUsage, started_at: datetime, reason: str
    ) -> None:
        """Record an attempt that stopped because the run's budget was spent (outcome ``budget``), put the
        shard back in the queue without using up a try, and pause the run. The shard waits, unsent, for
        ``submit.py --resume`` (the reaper leaves it alone: it has no pending message)."""
        with self._sessions() as session, session.begin():
            record_attempt_row(session, run_id, shard_id, attempt, usage, UsageOutcome.BUDGET, started_at)
            session.execute(
                update(Shard)
                .where(*_held_by(run_id, shard_id, attempt))
                .values(
                    status=ShardStatus.QUEUED,
                    lease_expires_at=None,
                    attempts_base=Shard.attempts,
                    enqueued_at=None,
                )
            )
            run = session.get(Run, run_id, with_for_update=True)
            if run is not None and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                run.status = RunStatus.PAUSED_BUDGET
                run.options = {**run.options, PAUSED_BY: reason}

    def superseded(
        self, run_id: str, shard_id: int, attempt: int, usage: AttemptUsage, started_at: datetime
    ) -> None:
        """Record the usage of an attempt that stopped scoring because a newer attempt took over its
        lease (outcome ``lease_lost``). The shard belongs to the newer attempt, so it is left alone."""
        with self._sessions() as session, session.begin():
            record_attempt_row(session, run_id, shard_id, attempt, usage, UsageOutcome.LEASE_LOST, started_at)

    def expired(self, limit: int = 100) -> list[Shard]:
        """Shards whose attempt stopped renewing its lease: its worker died."""
        with self._reads() as session:
            query = (
                select(Shard)
                .where(Shard.status == ShardStatus.RUNNING, Shard.lease_expires_at < utcnow())
                .limit(limit)
            )
            return list(session.scalars(query))

    def stranded(self, older_than_s: float, limit: int = 100) -> list[Shard]:
        """Shards queued for longer than ``older_than_s`` with no attempt running: their message may
        have been lost with a host (taken from the queue, never leased)."""
        with self._reads() as session:
            query = (
                select(Shard)
                .join(Run, Run.run_id == Shard.run_id)
                .where(
                    Shard.status == ShardStatus.QUEUED,
                    Shard.enqueued_at < utcnow() - timedelta(seconds=older_than_s),
                    # A paused run's shards wait for submit.py --resume, not for the reaper.
                    Run.status != RunStatus.PAUSED_BUDGET,
                )
                .limit(limit)
            )
            return list(session.scalars(query))

    def resend_stranded(self, run_id: str, shard_id: int, enqueued_at: datetime) -> bool:
        """Claim a stranded shard for sending again (once, whoever asks first): its enqueue time moves
        to now if it is still queued since ``enqueued_at``."""
        with self._sessions() as session, session.begin():
            claimed = session.scalar(
                update(Shard)
                .where(
                    Shard.run_id == run_id,
                    Shard.shard_id == shard_id,
                    Shard.status == ShardStatus.QUEUED,
                    Shard.enqueued_at == enqueued_at,
                )
                .values(enqueued_at=utcnow())
                .returning(Shard.shard_id)
            )
            return claimed is not None

    def requeue_expired(self, run_id: str, shard_id: int, attempt: int) -> bool:
        """Move an expired attempt's shard back to queued (once, whoever asks first)."""
        with self._sessions() as session, session.begin():
            requeued = session.scalar(
                update(Shard)
                .where(*_held_by(run_id, shard_id, attempt), Shard.lease_expires_at < utcnow())
                .values(status=ShardStatus.QUEUED, lease_expires_at=None, enqueued_at=utcnow())
                .returning(Shard.shard_id)
            )
            return requeued is not None


def _held_by(run_id: str, shard_id: int, attempt: int) -> tuple[ColumnElement[bool], ...]:
    return (
        Shard.run_id == run_id,
        Shard.shard_id == shard_id,
        Shard.attempts == attempt,
        Shard.status == ShardStatus.RUNNING,
    )


def move_scores(session: Session, run_id: str, shard_id: int, chosen: str, copy: str) -> bool:
    """Point a done shard at ``copy``, a complete copy of the scores at ``chosen``, if it still points
    at ``chosen``. Returns whether it did."""
    moved = session.scalar(
        update(Shard)
        .where(
            Shard.run_id == run_id,
            Shard.shard_id == shard_id,
            Shard.status == ShardStatus.DONE,
            Shard.scores_path == chosen,
        )
        .values(scores_path=copy)
        .returning(Shard.shard_id)
    )
    return moved is not None
