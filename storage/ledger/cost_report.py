"""Cost accounting from the ledger: usage and cost grouped by run, model, provider, worker, day, role
(production, or the shadow runs of ``submit.py --shadow``) or stage (of a ``submit.py --then`` cascade).

API requests carry the cost priced when they were recorded; GPU hours are priced here from the price
table's GPU-hour entries. A GPU costs what it is held, busy or not, so GPU hours are the wall time of every
attempt on a CUDA device (failed ones too: their time was spent); the time in forward passes is reported
beside them as the busy share."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from core.pricing import PriceTable
from storage.ledger.schema import Run, Usage
from storage.ledger.statuses import UsageOutcome
from storage.ledger.usage_rows import SUMMARY_ROW

Dimension = Literal["run", "model", "provider", "worker", "day", "role", "stage"]
DIMENSIONS: tuple[Dimension, ...] = ("run", "model", "provider", "worker", "day", "role", "stage")


@dataclass
class CostRow:
    """Totals for one group; ``cost_usd`` is API cost plus GPU hours at the price table's rates."""

    group: dict[str, str]
    requests: int = 0
    tokens: int = 0
    search_units: int = 0
    pairs: int = 0
    gpu_hours: float = 0.0  # held: the attempts' wall time on CUDA devices
    gpu_busy_hours: float = 0.0  # of which in forward passes
    api_cost_usd: float = 0.0
    gpu_cost_usd: float = 0.0
    unpriced: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return self.api_cost_usd + self.gpu_cost_usd

    @property
    def cost_per_million_pairs(self) -> float | None:
        return self.cost_usd / self.pairs * 1e6 if self.pairs else None

    @property
    def gpu_busy_share(self) -> float | None:
        return self.gpu_busy_hours / self.gpu_hours if self.gpu_hours else None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        group = values.pop("group")
        return {
            **group,
            **values,
            "cost_usd": self.cost_usd,
            "cost_per_million_pairs": self.cost_per_million_pairs,
            "gpu_busy_share": self.gpu_busy_share,
        }


def _dimension_column(dimension: Dimension) -> ColumnElement[Any]:
    if dimension == "run":
        return Usage.run_id.expression
    if dimension == "model":
        return Usage.model.expression
    if dimension == "provider":
        return func.coalesce(Usage.provider, literal("local"))
    if dimension == "worker":
        return Usage.worker.expression
    if dimension == "stage":  # a cascade's later stages are numbered; every other run is its own stage 1
        return case((Run.cascade_of.is_not(None), cast(Run.stage, String)), else_=literal("1"))
    if dimension == "role":  # a shadow run's usage is the shadow's, whatever its model
        return case((Run.shadow_of.is_not(None), literal("shadow")), else_=literal("production"))
    return func.date(Usage.finished_at)


def cost_report(
    session: Session,
    by: Sequence[Dimension],
    prices: PriceTable,
    since: date | None = None,
    until: date | None = None,
    run_id: str | None = None,
) -> list[CostRow]:
    """One row per group over usage finished in [since, until] (whole days, UTC)."""
    groups = [_dimension_column(dimension).label(dimension) for dimension in by]
    day = func.date(Usage.finished_at).label("usage_day")
    attempt_row = Usage.request_index == SUMMARY_ROW
    scored_pairs = case((and_(attempt_row, Usage.outcome == UsageOutcome.OK), Usage.pairs), else_=0)
    on_gpu = and_(attempt_row, Usage.device.like("cuda%"))
    gpu_seconds = case((on_gpu, Usage.wall_seconds), else_=0.0)
    gpu_busy_seconds = case((on_gpu, Usage.device_seconds), else_=0.0)
    query = (
        select(
            *groups,
            day,
            Usage.device,
            func.sum(Usage.requests),
            func.sum(Usage.tokens),
            func.sum(Usage.search_units),
            func.sum(scored_pairs),
            func.sum(gpu_seconds),
            func.sum(gpu_busy_seconds),
            func.sum(func.coalesce(Usage.cost_usd, 0.0)),
            func.sum(case((and_(Usage.request_index > SUMMARY_ROW, Usage.cost_usd.is_(None)), 1), else_=0)),
        )
        .join(Run, Run.run_id == Usage.run_id)
        .group_by(*groups, day, Usage.device)
        .order_by(*groups)
    )
    if since is not None:
        query = query.where(Usage.finished_at >= datetime.combine(since, time.min, UTC))
    if until is not None:
        query = query.where(Usage.finished_at < datetime.combine(until + timedelta(days=1), time.min, UTC))
    if run_id is not None:  # a cascade's first run stands for all of its stages
        query = query.where(or_(Usage.run_id == run_id, Run.cascade_of == run_id))
    rows: dict[tuple[str, ...], CostRow] = {}
    unpriced: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for record in session.execute(query):
        key = tuple(str(value) for value in record[: len(by)])
        values = record[len(by) :]
        usage_day, device, requests, tokens, units, pairs, gpu_s, busy_s, api_cost, unpriced_requests = values
        row = rows.setdefault(key, CostRow(group=dict(zip(by, key, strict=True))))
        row.requests += int(requests or 0)
        row.tokens += int(tokens or 0)
        row.search_units += int(units or 0)
        row.pairs += int(pairs or 0)
        row.api_cost_usd += float(api_cost or 0.0)
        hours = float(gpu_s or 0.0) / 3600
        row.gpu_hours += hours
        row.gpu_busy_hours += float(busy_s or 0.0) / 3600
        if hours:
            price = prices.gpu_hour_price(device, _as_date(usage_day))
            if price is None:
                unpriced[key].add(f"GPU hours on {device}")
            else:
                row.gpu_cost_usd += hours * price.usd_per_hour
        if unpriced_requests:
            unpriced[key].add("API requests without a price entry")
    for key, reasons in unpriced.items():
        rows[key].unpriced = sorted(reasons)
    return list(rows.values())


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
