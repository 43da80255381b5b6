"""A run's budget, enforced fleet-wide: the spent-plus-reserved cost and tokens of the run live in two
Redis counters that every worker of every host checks and moves atomically (one Lua script), starting
from what the ledger recorded. A request is sent only while the counters are below the budget, so a run
overshoots its budget by at most the requests in flight when it was reached (one, when the estimates
hold), never by a shard."""

from __future__ import annotations

from collections.abc import Callable

import redis

from core.budget import Budget, spend_keys

# Admit (and reserve) while both counters are below their limits; '' is no limit.
_RESERVE = """
local cost = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' and cost >= tonumber(ARGV[1]) then return 0 end
if ARGV[2] ~= '' and tokens >= tonumber(ARGV[2]) then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[3])
redis.call('INCRBYFLOAT', KEYS[2], ARGV[4])
return 1
"""
_KEEP_S = 14 * 24 * 3600  # counters of a forgotten run expire


class RedisSpendGate:
    """The ``SpendGate`` (``worker/backends/spending.py``) of one run."""

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str,
        run_id: str,
        budget: Budget,
        recorded: Callable[[], tuple[float, int]],
    ) -> None:
        """``recorded`` reads the run's cost and tokens from the ledger, for counters not yet set."""
        self.client = client
        self.budget = budget
        self.keys = spend_keys(key_prefix, run_id)
        self._reserve = client.register_script(_RESERVE)
        if not all(client.exists(key) for key in self.keys):
            cost, tokens = recorded()
            client.set(self.keys[0], repr(cost), nx=True, ex=_KEEP_S)
            client.set(self.keys[1], str(tokens), nx=True, ex=_KEEP_S)

    def reserve(self, cost_usd: float, tokens: int) -> bool:
        limits = [
            "" if self.budget.max_cost_usd is None else repr(self.budget.max_cost_usd),
            "" if self.budget.max_tokens is None else str(self.budget.max_tokens),
        ]
        return bool(self._reserve(keys=list(self.keys), args=[*limits, repr(cost_usd), str(tokens)]))

    def settle(self, reserved_cost_usd: float, reserved_tokens: int, cost_usd: float, tokens: int) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(self.keys[0], cost_usd - reserved_cost_usd)
            pipe.incrbyfloat(self.keys[1], tokens - reserved_tokens)
            pipe.execute()

    def exhausted(self) -> bool:
        """Whether the run has reached its budget (nothing more may start)."""
        cost, tokens = (float(value or 0) for value in self.client.mget(list(self.keys)))
        return (self.budget.max_cost_usd is not None and cost >= self.budget.max_cost_usd) or (
            self.budget.max_tokens is not None and tokens >= self.budget.max_tokens
        )
