"""The SQL ledger: runs, shards and usage. The single source of truth for what is done."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import Engine, func, inspect, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.usage import RequestUsage
from storage.ledger.engine import create_ledger_engine
from storage.ledger.requests import record_request_rows
from storage.ledger.schema import Run, Shard, Usage
from storage.ledger.types import (
    RunProgress,
    RunStatus,
    ShardPlanRow,
    ShardStatus,
    UsageTotals,
    utcnow,
)
from storage.ledger.upgrade import upgrade


class Ledger:
    """All reads and writes of the ledger go through here; every method is one short transaction."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_ledger_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

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
        """A new ORM session; use ``with ledger.session() as s, s.begin():`` for one transaction."""
        return self._sessions()

    # -- producer ---------------------------------------------------------------------------------

    def create_run(self, run: Run, shards: Iterable[ShardPlanRow]) -> None:
        """Record a run and all its shards atomically."""
        with self.session() as session, session.begin():
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

    def get_run(self, run_id: str) -> Run | None:
        with self.session() as session:
            return session.get(Run, run_id)

    def latest_run_id(self) -> str | None:
        with self.session() as session:
            return session.scalar(select(Run.run_id).order_by(Run.created_at.desc()).limit(1))

    def latest_completed_run(self, model: str) -> str | None:
        """The newest run of ``model`` that completed without failures."""
        with self.session() as session:
            return session.scalar(
                select(Run.run_id)
                .where(Run.model == model, Run.status == RunStatus.COMPLETED)
                .order_by(Run.created_at.desc())
                .limit(1)
            )

    def shards(self, run_id: str, statuses: Iterable[str] | None = None) -> list[Shard]:
        with self.session() as session:
            query = select(Shard).where(Shard.run_id == run_id).order_by(Shard.shard_id)
            if statuses is not None:
                query = query.where(Shard.status.in_(list(statuses)))
            return list(session.scalars(query))

    def mark_enqueued(self, run_id: str, shard_ids: Iterable[int]) -> list[int]:
        """Record that these shards are (re-)sent to the broker, each with fresh tries, and return the
        ids marked. Done shards, and shards whose running attempt still renews its lease, are left
        alone: sending them again would only make a duplicate."""
        ids = list(shard_ids)
        if not ids:
            return []
        now = utcnow()
        with self.session() as session, session.begin():
            marked = session.scalars(
                update(Shard)
                .where(
                    Shard.run_id == run_id,
                    Shard.shard_id.in_(ids),
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

    def delete_run(self, run_id: str) -> None:
        with self.session() as session, session.begin():
            session.query(Usage).where(Usage.run_id == run_id).delete()
            session.query(Shard).where(Shard.run_id == run_id).delete()
            session.query(Run).where(Run.run_id == run_id).delete()

    # -- reporting --------------------------------------------------------------------------------

    def progress(self, run_id: str) -> RunProgress:
        with self.session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise KeyError(run_id)
            rows = session.execute(
                select(Shard.status, func.count(), func.coalesce(func.sum(Shard.pairs), 0))
                .where(Shard.run_id == run_id)
                .group_by(Shard.status)
            ).all()
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

    def usage_totals(self, run_id: str) -> UsageTotals:
        """Attempts, pairs and times from the attempt rows (``request_index`` 0); tokens from every
        row, since API models keep theirs on the request rows only."""
        attempt_row = Usage.request_index == 0
        with self.session() as session:
            row = session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Usage.pairs), 0),
                    func.coalesce(func.sum(Usage.device_seconds), 0.0),
                    func.coalesce(func.sum(Usage.wall_seconds), 0.0),
                    func.count(func.distinct(Usage.worker)),
                ).where(Usage.run_id == run_id, attempt_row)
            ).one()
            tokens = session.scalar(
                select(func.coalesce(func.sum(Usage.tokens), 0)).where(Usage.run_id == run_id)
            )
            failed = session.scalar(
                select(func.count())
                .select_from(Usage)
                .where(Usage.run_id == run_id, attempt_row, Usage.outcome != "ok")
            )
        attempts, pairs, device_s, wall_s, workers = row
        return UsageTotals(
            attempts=int(attempts),
            failed_attempts=int(failed or 0),
            pairs=int(pairs),
            tokens=int(tokens or 0),
            device_seconds=float(device_s),
            wall_seconds=float(wall_s),
            workers=int(workers),
        )

    # -- API request rows -------------------------------------------------------------------------

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
        rows already recorded under the same key are kept, so reporting twice is harmless. Returns
        the number of rows added."""
        return record_request_rows(self, run_id, shard_id, attempt, worker, model, requests)
