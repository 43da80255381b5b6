"""What a worker process holds for its whole life: settings, the data dir, the ledger and its one
reranker."""

from __future__ import annotations

import threading

import redis

from core.broker import resolve_broker_url
from core.broker.url import connect
from core.budget import Budget
from core.errors import MessageError
from core.model_spec import ModelSpec
from core.settings import Settings, get_settings
from storage.ledger import Ledger
from storage.location import data_location
from worker.backends import load_reranker
from worker.backends.base import Reranker
from worker.held_time import HeldTime
from worker.spend_gate import RedisSpendGate, run_limits


class WrongModelError(MessageError):
    """Raised when a shard asks for a model other than the one this worker hosts (a routing mistake)."""


class WorkerRuntime:
    """Loads the reranker once, behind a lock, and hands the same instance to every task. A reranker
    already built (``reranker``: a test's or a benchmark's) is hosted as if it had been loaded."""

    def __init__(self, settings: Settings, reranker: Reranker | None = None) -> None:
        self.settings = settings
        self.data = data_location(settings)
        self.ledger = Ledger(settings.resolved_ledger_url)
        self.leases = self.ledger.leases(settings.max_attempts, settings.lease_s)
        self._reranker: Reranker | None = reranker
        self._redis: redis.Redis | None = None
        self._lock = threading.Lock()
        # The wall time of this process's attempts, charged once however many shards are in flight.
        self.held_time = HeldTime()

    def spend_gate(self, run_id: str, spec: ModelSpec, budget: Budget) -> RedisSpendGate | None:
        """The fleet-wide gate of a run's limits (its budget, the day's limit of its model or provider),
        on the broker's Redis; None when no limit applies."""
        limits = run_limits(
            self.settings.redis_key_prefix,
            run_id,
            str(spec),
            spec.kind,
            budget,
            self.settings.daily_budgets_usd,
            lambda: self.ledger.spent(run_id),
            self.ledger.spent_on,
        )
        if not limits():
            return None
        with self._lock:
            if self._redis is None:
                self._redis = connect(resolve_broker_url(self.settings))
        return RedisSpendGate(self._redis, limits)

    def reranker(self, spec: ModelSpec) -> Reranker:
        with self._lock:
            if self._reranker is None:
                self._reranker = load_reranker(spec, self.settings)
            elif self._reranker.spec != spec:
                raise WrongModelError(f"this worker hosts {self._reranker.spec}, not {spec}")
            return self._reranker


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> WorkerRuntime:
    """The process-wide runtime, created on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(get_settings())
        return _runtime
