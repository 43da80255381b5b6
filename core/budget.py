"""A run's spending limits: ``submit.py --max-cost-usd`` and ``--max-tokens``, kept in the run's options
in the ledger and enforced fleet-wide by the workers (``worker/spend_gate.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

OPTIONS_KEY = "budget"


@dataclass(frozen=True)
class Budget:
    max_cost_usd: float | None = None
    max_tokens: int | None = None

    @property
    def limited(self) -> bool:
        return self.max_cost_usd is not None or self.max_tokens is not None

    def as_options(self) -> dict[str, float | int | None]:
        return {"max_cost_usd": self.max_cost_usd, "max_tokens": self.max_tokens}

    @classmethod
    def from_options(cls, options: Mapping[str, object] | None) -> Budget:
        """The budget a run's options record (none: unlimited)."""
        recorded = (options or {}).get(OPTIONS_KEY)
        if not isinstance(recorded, Mapping):
            return cls()
        cost, tokens = recorded.get("max_cost_usd"), recorded.get("max_tokens")
        return cls(
            max_cost_usd=float(cost) if isinstance(cost, int | float) else None,
            max_tokens=int(tokens) if isinstance(tokens, int | float) else None,
        )

    def describe(self) -> str:
        parts = []
        if self.max_cost_usd is not None:
            parts.append(f"${self.max_cost_usd:,.4f}")
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens:,} tokens")
        return " and ".join(parts) or "unlimited"


def spend_keys(key_prefix: str, run_id: str) -> tuple[str, str]:
    """The Redis keys holding a run's spent-plus-reserved cost (USD) and tokens across the fleet. They
    start from the ledger's figures; ``submit.py --resume`` with a new budget deletes them so that they
    start from the ledger again."""
    return f"{key_prefix}budget:{run_id}:cost", f"{key_prefix}budget:{run_id}:tokens"


def daily_spend_keys(key_prefix: str, day: date, name: str) -> tuple[str, str]:
    """The Redis keys of a model's or provider's spent-plus-reserved cost and tokens on ``day`` (UTC)."""
    return (
        f"{key_prefix}budget:day:{day.isoformat()}:{name}:cost",
        f"{key_prefix}budget:day:{day.isoformat()}:{name}:tokens",
    )
