"""The ledger's tables: one row per run, per shard, and per scoring attempt or API request (usage).

The tables themselves are made by the Alembic migrations (``migrations/``); the mapping here must match
them. Status columns map to their enums (``statuses``) but are stored as plain strings, as they always
were, so no migration is needed for them and older ledgers read back unchanged."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.budget import Budget
from core.messages import ShardRef
from storage.ledger.statuses import RunStatus, ShardStatus, UsageOutcome


def stored_as_string(enum: type[StrEnum], length: int) -> Enum:
    """A column type that reads and writes ``enum`` members as their values in a ``VARCHAR(length)``:
    no database enum type and no CHECK constraint, so the schema is the one the migrations made."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One submission of one corpus to one model."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(512))
    queue: Mapped[str] = mapped_column(String(128))
    corpus_path: Mapped[str] = mapped_column(Text)
    status: Mapped[RunStatus] = mapped_column(stored_as_string(RunStatus, 32), index=True)
    n_shards: Mapped[int] = mapped_column(Integer)
    n_pairs: Mapped[int] = mapped_column(Integer)
    n_queries: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A shadow run (``submit.py --shadow``): the production run whose corpus it scores with another model.
    shadow_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A later stage of a cascade (``submit.py --then``): the cascade's first run, and which stage (2, 3,
    # ...); at most one run per stage.
    cascade_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("uq_runs_cascade_stage", "cascade_of", "stage", unique=True),)


class Shard(Base):
    """One shard of whole queries.

    ``attempts`` doubles as the fencing token of the current attempt: only the attempt whose number
    equals it, while its lease (``lease_expires_at``) is renewed, may publish the shard's file.
    ``attempts_base`` is ``attempts`` when the shard was last (re-)enqueued, so that each submission
    gets ``max_attempts`` fresh tries."""

    __tablename__ = "shards"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    shard_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[ShardStatus] = mapped_column(stored_as_string(ShardStatus, 32))
    pairs: Mapped[int] = mapped_column(Integer)
    queries: Mapped[int] = mapped_column(Integer)
    input_path: Mapped[str] = mapped_column(Text)
    output_path: Mapped[str] = mapped_column(Text)
    # The attempt's key that the fenced publish chose, then output_path once copied there (None: not
    # published yet, or published by a release that renamed its file onto output_path).
    scores_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempts_base: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_shards_run_status", "run_id", "status"),)

    @property
    def published_scores(self) -> str:
        """Where this done shard's scores are, relative to the data dir."""
        return self.scores_path or self.output_path

    def ref(self, run: Run) -> ShardRef:
        """The message body that names this shard of ``run``."""
        return ShardRef(
            run_id=self.run_id,
            shard_id=self.shard_id,
            input_path=self.input_path,
            output_path=self.output_path,
            model=run.model,
            pairs=self.pairs,
            budgeted=Budget.from_options(run.options).limited,
        )


class Usage(Base):
    """What one attempt at one shard consumed, recorded whether it succeeded or not.

    Every attempt writes one summary row (``request_index`` 0); API workers add one row per HTTP request
    attempt (``request_index`` 1, 2, ...), failed ones included, since they are billed. ``usage_rows``
    writes them all."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    shard_id: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    request_index: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(512))
    device: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[UsageOutcome] = mapped_column(stored_as_string(UsageOutcome, 16))
    pairs: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    search_units: Mapped[int] = mapped_column(Integer, default=0)
    # Of the pairs scored, how many were cut to fit the model's limit; None where the backend cannot tell.
    truncated_pairs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    __table_args__ = (
        Index("uq_usage_attempt", "run_id", "shard_id", "attempt", "request_index", unique=True),
    )
