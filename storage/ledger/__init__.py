"""The SQL ledger: runs, shards and usage. The single source of truth for what is done.

Everything goes through one API, ``Ledger`` (``storage.ledger.ledger``); the names below are what its
methods take and return. Submodules hold one concept each and never import this package's ``__init__``:

- ``schema``: the tables; ``statuses``: the enums their status columns hold; ``types``: values in and out;
- ``runs``: recording runs and enqueueing shards; ``leases``: attempts at shards, fenced publication;
  ``completion``: closing a run when its last shard is final;
- ``usage_rows``: the one writer of ``usage`` rows (attempt summaries and API request rows);
- ``reports``: progress and usage totals; ``cost_report``: cost grouped by run, model, provider, worker, day;
- ``engine``, ``upgrade``, ``migrations``: connecting, and creating or upgrading the schema in place.
"""

from storage.ledger.cost_report import DIMENSIONS, CostRow, Dimension
from storage.ledger.leases import Busy, Closed, Grant, Granted, Publication, ShardLeases
from storage.ledger.ledger import Ledger
from storage.ledger.schema import Run, Shard, Usage
from storage.ledger.statuses import FINAL_SHARD_STATUSES, RunStatus, ShardStatus, UsageOutcome
from storage.ledger.types import (
    ApiUsageTotals,
    AttemptUsage,
    RunProgress,
    ShardPlanRow,
    UsageTotals,
    utcnow,
)

__all__ = [
    "DIMENSIONS",
    "FINAL_SHARD_STATUSES",
    "ApiUsageTotals",
    "AttemptUsage",
    "Busy",
    "Closed",
    "CostRow",
    "Dimension",
    "Grant",
    "Granted",
    "Ledger",
    "Publication",
    "Run",
    "RunProgress",
    "RunStatus",
    "Shard",
    "ShardLeases",
    "ShardPlanRow",
    "ShardStatus",
    "Usage",
    "UsageOutcome",
    "UsageTotals",
    "utcnow",
]
