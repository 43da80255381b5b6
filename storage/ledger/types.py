"""Values the ledger takes and returns: statuses, plan rows, usage and progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"


class ShardStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINAL_SHARD_STATUSES = (ShardStatus.DONE, ShardStatus.FAILED)


@dataclass(frozen=True)
class ShardPlanRow:
    """A shard as the producer records it."""

    shard_id: int
    pairs: int
    queries: int
    input_path: str
    output_path: str


@dataclass(frozen=True)
class AttemptUsage:
    """What one shard attempt consumed (the attempt's summary row, ``request_index`` 0)."""

    worker: str
    model: str
    device: str
    pairs: int = 0
    tokens: int = 0
    requests: int = 0
    search_units: int = 0
    device_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    status: str
    shards_total: int
    shards_done: int
    shards_failed: int
    pairs_total: int
    pairs_done: int
    created_at: datetime

    @property
    def finished(self) -> bool:
        return self.shards_done + self.shards_failed >= self.shards_total


@dataclass(frozen=True)
class UsageTotals:
    attempts: int
    failed_attempts: int
    pairs: int
    tokens: int
    device_seconds: float
    wall_seconds: float
    workers: int


def utcnow() -> datetime:
    return datetime.now(UTC)
