"""Spending limits, enforced fleet-wide: a run's budget (``submit.py --max-cost-usd``/``--max-tokens``)
and the day's limit of its model or provider (``RERANK_DAILY_BUDGETS_USD``). Each limit's spent-plus-
reserved cost and tokens live in two Redis counters that every worker of every host checks and moves
atomically (one Lua script for all the limits of a request), starting from what the ledger recorded. A
request is sent only while every counter is below its limit, so spending overshoots a limit by at most
the requests in flight when it was reached (one, when the estimates hold), never by a shard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial

import redis

from core.budget import Budget, daily_spend_keys, spend_keys
from core.errors import BudgetExhaustedError
from storage.ledger import utcnow

# KEYS: cost and tokens counter of each limit; ARGV: each limit's max cost and max tokens ('' is none),
# then the cost and tokens to reserve. Returns 0 (reserved) or the 1-based index of a limit met.
_RESERVE = """
local n = #KEYS / 2
for i = 1, n do
  local cost = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local tokens = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if ARGV[2 * i - 1] ~= '' and cost >= tonumber(ARGV[2 * i - 1]) then return i end
  if ARGV[2 * i] ~= '' and tokens >= tonumber(ARGV[2 * i]) then return i end
end
for i = 1, n do
  redis.call('INCRBYFLOAT', KEYS[2 * i - 1], ARGV[2 * n + 1])
  redis.call('INCRBYFLOAT', KEYS[2 * i], ARGV[2 * n + 2])
end
return 0
"""
_KEEP_S = 14 * 24 * 3600  # counters of a forgotten run or day expire


@dataclass(frozen=True)
class Limit:
    """One pair of counters and their limits; ``recorded`` reads their starting point from the ledger."""

    description: str
    keys: tuple[str, str]
    max_cost_usd: float | None
    max_tokens: int | None
    recorded: Callable[[], tuple[float, int]]


@dataclass(frozen=True)
class Reservation:
    keys: tuple[str, ...]
    cost_usd: float
    tokens: int


class RedisSpendGate:
    """The ``SpendGate`` (``worker/backends/spending.py``) of one shard attempt of a run."""

    def __init__(self, client: redis.Redis, limits: Callable[[], Sequence[Limit]]) -> None:
        """``limits`` gives the limits in force now (a daily limit's counters change with the date)."""
        self.client = client
        self._limits = limits
        self._script = client.register_script(_RESERVE)
        self._started: set[str] = set()

    def reserve(self, cost_usd: float, tokens: int) -> Reservation:
        """Reserve a request's estimated cost and tokens under every limit; raises
        ``BudgetExhaustedError`` naming the limit met instead."""
        limits = self._current()
        keys = [key for limit in limits for key in limit.keys]
        bounds = [
            "" if bound is None else repr(bound)
            for limit in limits
            for bound in (limit.max_cost_usd, limit.max_tokens)
        ]
        met = int(self._script(keys=keys, args=[*bounds, repr(cost_usd), str(tokens)]))
        if met:
            raise BudgetExhaustedError(f"{limits[met - 1].description} is spent")
        return Reservation(tuple(keys), cost_usd, tokens)

    def settle(self, reservation: object, cost_usd: float, tokens: int) -> None:
        assert isinstance(reservation, Reservation)
        with self.client.pipeline(transaction=True) as pipe:
            for cost_key, tokens_key in zip(reservation.keys[::2], reservation.keys[1::2], strict=True):
                pipe.incrbyfloat(cost_key, cost_usd - reservation.cost_usd)
                pipe.incrbyfloat(tokens_key, tokens - reservation.tokens)
            pipe.execute()

    def record(self, cost_usd: float, tokens: int) -> None:
        """Count what was spent without asking first (a local model's tokens, known once it scored)."""
        self.settle(
            Reservation(tuple(key for limit in self._current() for key in limit.keys), 0.0, 0),
            cost_usd,
            tokens,
        )

    def check(self) -> None:
        """Raise ``BudgetExhaustedError`` when a limit is already reached (nothing more may start): the
        reservation's own test, reserving nothing."""
        self.reserve(0.0, 0)

    def _current(self) -> list[Limit]:
        limits = list(self._limits())
        for limit in limits:
            if limit.keys[0] in self._started:
                continue
            if not all(self.client.exists(key) for key in limit.keys):
                cost, tokens = limit.recorded()
                self.client.set(limit.keys[0], repr(cost), nx=True, ex=_KEEP_S)
                self.client.set(limit.keys[1], str(tokens), nx=True, ex=_KEEP_S)
            self._started.add(limit.keys[0])
        return limits


def run_limits(
    key_prefix: str,
    run_id: str,
    model: str,
    provider: str,
    budget: Budget,
    daily_usd: dict[str, float],
    recorded_run: Callable[[], tuple[float, int]],
    recorded_day: Callable[[date, str], tuple[float, int]],
) -> Callable[[], list[Limit]]:
    """The limits a run's requests are under: its budget, and the day's limit of its model (``kind:name``)
    or its provider (the kind) where ``RERANK_DAILY_BUDGETS_USD`` names them."""

    def limits() -> list[Limit]:
        found = []
        if budget.limited:
            found.append(
                Limit(
                    f"the run's budget ({budget.describe()})",
                    spend_keys(key_prefix, run_id),
                    budget.max_cost_usd,
                    budget.max_tokens,
                    recorded_run,
                )
            )
        today = utcnow().date()
        for name in (model, provider):
            if name in daily_usd:
                found.append(
                    Limit(
                        f"the daily limit of {name} (${daily_usd[name]:,.4f} on {today})",
                        daily_spend_keys(key_prefix, today, name),
                        daily_usd[name],
                        None,
                        partial(recorded_day, today, name),
                    )
                )
        return found

    return limits
