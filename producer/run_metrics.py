"""Runs as Prometheus metrics: for each run of the window (and every run still going), its pairs done of
total, pairs per second, ETA, cost so far, failed shards, truncation and drift, labelled by run, model and
role, read from the ledger at each scrape. ``scripts/metrics.py`` serves them over HTTP."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.pricing import PriceTable
from storage.ledger import Ledger, Run, RunStatus

PREFIX = "bulk_rerank_run"
LABELS = ("run_id", "model", "role")
_FINISHED = (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_FAILURES, RunStatus.COMPLETED_WITH_DRIFT)


class RunMetrics(Collector):
    """A Prometheus collector over the ledger; every scrape reads it afresh."""

    def __init__(self, ledger: Ledger, prices: PriceTable, window: timedelta) -> None:
        self.ledger = ledger
        self.prices = prices
        self.window = window

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the runs, and so the labels, are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "pairs_total": "pairs the run scores (corpus and canary)",
            "pairs_done": "pairs in finished shards",
            "shards_total": "shards of the run",
            "shards_done": "shards scored and published",
            "shards_failed": "shards that failed every try",
            "pairs_per_second": "pairs done per second since the run was created (until it finished)",
            "eta_seconds": "seconds left at the run's pairs per second (0 once finished, NaN before a pair)",
            "cost_usd": "API cost plus priced GPU hours so far",
            "truncated_share": "share of the scored pairs cut to fit the model's limit (NaN when unknown)",
            "drift": "1 when the run's canary drifted from its previous run (completed_with_drift)",
            "finished": "1 once every shard is done or failed",
        }
        families = {
            name: GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=list(LABELS))
            for name, help_text in gauges.items()
        }
        status = GaugeMetricFamily(
            f"{PREFIX}_status", "1 for the run's current status", labels=[*LABELS, "status"]
        )
        now = datetime.now(UTC)
        if self.ledger.exists():
            for run in self.ledger.runs_since(now - self.window):
                labels = [run.run_id, run.model, "shadow" if run.shadow_of else "production"]
                for name, value in self._values(run, now).items():
                    families[name].add_metric(labels, value)
                status.add_metric([*labels, str(run.status)], 1.0)
        yield from families.values()
        yield status

    def _values(self, run: Run, now: datetime) -> dict[str, float]:
        progress = self.ledger.progress(run.run_id)
        usage = self.ledger.usage_totals(run.run_id)
        finished = run.status in _FINISHED
        end = _utc(run.finished_at) if finished and run.finished_at else now
        elapsed = max((end - _utc(run.created_at)).total_seconds(), 1e-9)
        rate = progress.pairs_done / elapsed
        left = max(progress.pairs_total - progress.pairs_done, 0)
        eta = 0.0 if finished else (left / rate if rate > 0 else math.nan)
        cost = sum(row.cost_usd for row in self.ledger.cost_report(["run"], self.prices, run_id=run.run_id))
        truncated = usage.truncation_rate
        return {
            "pairs_total": float(progress.pairs_total),
            "pairs_done": float(progress.pairs_done),
            "shards_total": float(progress.shards_total),
            "shards_done": float(progress.shards_done),
            "shards_failed": float(progress.shards_failed),
            "pairs_per_second": rate,
            "eta_seconds": eta,
            "cost_usd": cost,
            "truncated_share": math.nan if truncated is None else truncated,
            "drift": 1.0 if run.status == RunStatus.COMPLETED_WITH_DRIFT else 0.0,
            "finished": 1.0 if finished else 0.0,
        }


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the ledger writes UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
