"""Where a backend asks whether the run may spend more before it sends a request.

The worker installs the run's gate for the scoring of a shard (``spending``); an API backend reserves
each request's estimated cost and tokens with it before sending (``reserve`` raises
``BudgetExhaustedError`` when a limit is spent) and settles the reservation with what the answer cost.
Nothing is installed for a run under no limit, nor in benchmarks and tests that call a reranker
directly. The gate is passed by the backend to its request threads explicitly: context variables do not
follow work into a thread pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class SpendGate(Protocol):
    def reserve(self, cost_usd: float, tokens: int) -> object:
        """Reserve a request's estimated cost and tokens; raises ``BudgetExhaustedError`` (naming the
        limit) when the run may not spend more. Returns the reservation, for ``settle``."""
        ...

    def settle(self, reservation: object, cost_usd: float, tokens: int) -> None:
        """Replace a reservation by what the request actually cost."""
        ...


_gate: ContextVar[SpendGate | None] = ContextVar("spend_gate", default=None)


def current_gate() -> SpendGate | None:
    return _gate.get()


@contextmanager
def spending(gate: SpendGate | None) -> Iterator[None]:
    """Requests made inside the block (by this thread's reranker) go through ``gate``."""
    token = _gate.set(gate)
    try:
        yield
    finally:
        _gate.reset(token)
