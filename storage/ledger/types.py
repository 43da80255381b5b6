"""Values the ledger takes and returns: plan rows, an attempt's usage, progress and usage totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from storage.ledger.statuses import RunStatus


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
    """What one shard attempt consumed: its summary row in ``usage`` (``request_index`` 0).

    Every field is a ``usage`` column of the same name, and the writer (``usage_rows``) copies them all,
    so a new per-attempt column is a field here, a column in ``schema`` and a migration."""

    worker: str
    model: str
    device: str
    pairs: int = 0
    tokens: int = 0
    requests: int = 0
    search_units: int = 0
    truncated_pairs: int | None = None
    device_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    status: RunStatus
    shards_total: int
    shards_done: int
    shards_failed: int
    pairs_total: int
    pairs_done: int
    created_at: datetime

    @property
    def finished(self) -> bool:
        return self.shards_done + self.shards_failed >= self.shards_total

    @property
    def paused(self) -> bool:
        """Stopped by its budget until ``submit.py --resume`` raises it."""
        return self.status == RunStatus.PAUSED_BUDGET


@dataclass(frozen=True)
class MeasuredSpeed:
    """How fast a model's recent attempts scored, on the devices that ran them."""

    attempts: int
    pairs: int
    device_seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.device_seconds


@dataclass(frozen=True)
class UsageTotals:
    """A run's attempts, from their summary rows; ``tokens`` from every row (API models keep theirs on
    the request rows)."""

    attempts: int
    failed_attempts: int
    pairs: int
    tokens: int
    device_seconds: float
    wall_seconds: float
    workers: int
    # Of the scored pairs whose backend could tell (``pairs_checked``), how many were truncated.
    truncated_pairs: int = 0
    pairs_checked: int = 0
    # The devices the attempts ran on, as the ledger records them (with a local model's dtype and tuning).
    devices: tuple[str, ...] = ()

    @property
    def truncation_rate(self) -> float | None:
        return self.truncated_pairs / self.pairs_checked if self.pairs_checked else None


@dataclass(frozen=True)
class ApiUsageTotals:
    """What a run's API requests consumed; ``cost_usd`` is None when no request had a known price."""

    requests: int
    failed_requests: int
    tokens: int
    search_units: int
    cost_usd: float | None


def utcnow() -> datetime:
    return datetime.now(UTC)
