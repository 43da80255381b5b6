"""The ledger's one API: every read and write of runs, shards and usage goes through a ``Ledger``.

The ``Ledger`` owns the engine and the transactions; each method is one short transaction that calls the
module holding that concept: ``runs`` (recording and enqueueing runs), ``leases`` (attempts at shards,
with run completion in ``completion``), ``usage_rows`` (the one writer of ``usage`` rows), ``reports``
(progress and usage totals) and ``cost_report``. Those modules never import this one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.budget import Budget
from core.pricing import PriceTable
from core.usage import RequestUsage
from storage.ledger.cost_report import CostRow, Dimension, cost_report
from storage.ledger.engine import READ_ONLY, create_ledger_engine
from storage.ledger.leases import ShardLeases, move_scores
from storage.ledger.reports import (
    api_usage_totals,
    measured_speed,
    run_progress,
    spent,
    spent_on,
    usage_totals,
)
from storage.ledger.runs import (
    add_run,
    latest_completed_run_id,
    latest_run_id,
    mark_enqueued,
    recent_runs,
    record_canary_verdict,
    run_shards,
    runs_since,
    set_budget,
    shadow_runs,
    stage_runs,
)
from storage.ledger.schema import Run, Shard
from storage.ledger.statuses import ShardStatus
from storage.ledger.types import ApiUsageTotals, MeasuredSpeed, RunProgress, ShardPlanRow, UsageTotals
from storage.ledger.upgrade import upgrade
from storage.ledger.usage_rows import record_request_rows


class Ledger:
    """A ledger at a SQLAlchemy URL (SQLite or PostgreSQL)."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_ledger_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)

    # -- the database -----------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the ledger, or upgrade an older one in place (Alembic migrations)."""
        upgrade(self.engine)

    def exists(self) -> bool:
        """Whether the ledger has been created; never creates a SQLite file as a side effect."""
        url = make_url(self.url)
        is_sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        if is_sqlite_file and not Path(str(url.database)).is_file():
            return False
        return inspect(self.engine).has_table(Run.__tablename__)

    def dispose(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        """A new ORM session for queries of your own; ``with ledger.session() as s, s.begin():`` makes
        one transaction."""
        return self._sessions()

    # -- the producer: runs and shards ------------------------------------------------------------

    def create_run(self, run: Run, shards: Iterable[ShardPlanRow]) -> None:
        """Record a queued run and all its shards atomically."""
        with self._sessions() as session, session.begin():
            add_run(session, run, shards)

    def mark_enqueued(self, run_id: str, shard_ids: Iterable[int]) -> list[int]:
        """Record that these shards are (re-)sent to the broker, each with fresh tries, and return the
        ids marked. Done shards, and shards whose running attempt still renews its lease, are left
        alone: sending them again would only make a duplicate."""
        with self._sessions() as session, session.begin():
            return mark_enqueued(session, run_id, list(shard_ids))

    def get_run(self, run_id: str) -> Run | None:
        with self._reads() as session:
            return session.get(Run, run_id)

    def latest_run_id(self) -> str | None:
        with self._reads() as session:
            return latest_run_id(session)

    def latest_completed_run(self, model: str) -> str | None:
        """The id of the newest run of ``model`` that completed without failures."""
        with self._reads() as session:
            return latest_completed_run_id(session, model)

    def set_budget(self, run_id: str, budget: Budget) -> Run:
        """Give the run ``budget``; a run its old budget paused goes on."""
        with self._sessions() as session, session.begin():
            return set_budget(session, run_id, budget)

    def spent(self, run_id: str) -> tuple[float, int]:
        """The run's recorded API cost (USD) and tokens so far."""
        with self._reads() as session:
            return spent(session, run_id)

    def spent_on(self, day: date, name: str) -> tuple[float, int]:
        """The API cost (USD) and tokens recorded on ``day`` for a model (``kind:name``) or provider."""
        with self._reads() as session:
            return spent_on(session, day, name)

    def runs_since(self, since: datetime) -> list[Run]:
        """Runs created since ``since`` and every run still queued or running, oldest first."""
        with self._reads() as session:
            return runs_since(session, since)

    def shadow_runs(self, run_id: str) -> list[Run]:
        """The shadow runs of production run ``run_id`` (``submit.py --shadow``)."""
        with self._reads() as session:
            return shadow_runs(session, run_id)

    def stage_runs(self, run_id: str) -> list[Run]:
        """The later stages of cascade ``run_id`` (``submit.py --then``), in stage order."""
        with self._reads() as session:
            return stage_runs(session, run_id)

    def recent_runs(self, model: str, before: datetime, limit: int = 50) -> list[Run]:
        """Up to ``limit`` runs of ``model`` created before ``before``, newest first."""
        with self._reads() as session:
            return recent_runs(session, model, before, limit)

    def record_canary_verdict(self, run_id: str, verdict: dict[str, object], drifted: bool) -> Run:
        """Store a run's canary verdict once; a drifted completed run becomes ``completed_with_drift``."""
        with self._sessions() as session, session.begin():
            return record_canary_verdict(session, run_id, verdict, drifted)

    def shards(self, run_id: str, statuses: Iterable[ShardStatus] | None = None) -> list[Shard]:
        """The run's shards in shard order, only those in ``statuses`` when given."""
        with self._reads() as session:
            return run_shards(session, run_id, statuses)

    # -- the workers: leases and usage ------------------------------------------------------------

    def leases(self, max_attempts: int, lease_s: float) -> ShardLeases:
        """Attempts at shards under leases of ``lease_s`` seconds, at most ``max_attempts`` per enqueue."""
        return ShardLeases(self._sessions, self._reads, max_attempts, lease_s)

    def moved_scores(self, run_id: str, shard_id: int, chosen: str, copy: str) -> bool:
        """Point a done shard's scores at ``copy`` (a complete copy of ``chosen``) if they are at
        ``chosen``; returns whether they were."""
        with self._sessions() as session, session.begin():
            return move_scores(session, run_id, shard_id, chosen, copy)

    def record_requests(
        self,
        run_id: str,
        shard_id: int,
        attempt: int,
        worker: str,
        model: str,
        requests: Sequence[RequestUsage],
    ) -> int:
        """One usage row per API request attempt (``request_index`` 1, 2, ...), failed ones included;
        rows already recorded under the same key are kept, so reporting twice is harmless. Returns the
        number of rows added. Recorded apart from the attempt's outcome, so that billed requests stay
        recorded even when publishing the scores fails."""
        if not requests:
            return 0
        with self._sessions() as session, session.begin():
            return record_request_rows(session, run_id, shard_id, attempt, worker, model, requests)

    # -- reporting --------------------------------------------------------------------------------

    def progress(self, run_id: str) -> RunProgress:
        """Shards and pairs done and failed so far; raises ``KeyError`` for an unknown run."""
        with self._reads() as session:
            return run_progress(session, run_id)

    def usage_totals(self, run_id: str) -> UsageTotals:
        """The run's attempts, pairs scored, tokens, device and wall time, and workers."""
        with self._reads() as session:
            return usage_totals(session, run_id)

    def measured_speed(self, model: str, recent: int = 50) -> MeasuredSpeed | None:
        """Pairs per device-second of ``model``'s ``recent`` latest successful attempts (None: none yet)."""
        if not self.exists():
            return None
        with self._reads() as session:
            return measured_speed(session, model, recent)

    def api_usage_totals(self, run_id: str) -> ApiUsageTotals:
        """The run's API requests (failed ones included), tokens, search units and cost."""
        with self._reads() as session:
            return api_usage_totals(session, run_id)

    def cost_report(
        self,
        by: Sequence[Dimension],
        prices: PriceTable,
        since: date | None = None,
        until: date | None = None,
        run_id: str | None = None,
    ) -> list[CostRow]:
        """Usage and cost, one row per group of ``by``, over usage finished in [since, until] (whole days,
        UTC), optionally of one run only."""
        with self._reads() as session:
            return cost_report(session, by, prices, since, until, run_id)
