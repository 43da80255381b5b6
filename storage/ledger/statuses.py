"""The values the ledger's status columns take: a run's and a shard's status, and a usage row's outcome.

They are stored as their plain string values (``VARCHAR``, no database enum type), so the columns keep
the schema the migrations made and every ledger written by an older version reads back as these enums.
"""

from __future__ import annotations

from enum import StrEnum

from core.usage import RequestOutcome


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    # Every shard done, but the run's canary pairs scored unlike the canary's previous run.
    COMPLETED_WITH_DRIFT = "completed_with_drift"
    # Its budget (submit.py --max-cost-usd / --max-tokens) is spent: nothing more is scored until
    # submit.py --resume raises it.
    PAUSED_BUDGET = "paused_budget"


class ShardStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINAL_SHARD_STATUSES = (ShardStatus.DONE, ShardStatus.FAILED)


class UsageOutcome(StrEnum):
    """How the attempt or request a ``usage`` row records ended.

    An attempt's summary row (``request_index`` 0) is ``ok``, ``error`` or ``lease_lost`` (it stopped
    scoring once a newer attempt took its lease over); an API request row carries its ``RequestOutcome``
    (``ok``, ``rate_limited``, ...), of which this enum holds every value."""

    OK = "ok"
    ERROR = "error"
    LEASE_LOST = "lease_lost"
    BUDGET = "budget"  # stopped before a request or shard the run's budget could not pay for
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    TRANSPORT_ERROR = "transport_error"
    MALFORMED = "malformed"
    REJECTED = "rejected"

    @classmethod
    def of_request(cls, outcome: RequestOutcome) -> UsageOutcome:
        """The outcome a request row stores for a request that ended with ``outcome``."""
        return cls(outcome.value)
