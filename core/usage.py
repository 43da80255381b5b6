"""What one HTTP request to a hosted rerank API consumed: one ledger ``usage`` row per request attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RequestOutcome(StrEnum):
    """How a request attempt ended. Only ``ok`` carries scores; every outcome gets its own ledger row."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    TRANSPORT_ERROR = "transport_error"  # connection refused or reset
    MALFORMED = "malformed"  # a 2xx whose body is not the API's answer
    REJECTED = "rejected"  # any other 4xx: permanent


@dataclass(frozen=True)
class RequestUsage:
    """One request attempt. ``request_index`` counts from 1 within a shard attempt (0 is the attempt's
    summary row). ``tokens`` and ``search_units`` are what the provider reported, else an estimate
    (see ``worker/backends/api/tokens.py``); ``output_tokens`` is the part of ``tokens`` that was
    generated (LLM judges), priced separately where the price table says so."""

    request_index: int
    provider: str
    outcome: RequestOutcome
    pairs: int
    tokens: int
    output_tokens: int
    search_units: int
    cost_usd: float | None
    wall_seconds: float
    started_at: datetime
    finished_at: datetime
    status_code: int | None = None
