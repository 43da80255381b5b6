"""Human-readable summaries of a run, from the ledger: plain lines (logs, pipes, tests) or a rich
table for a terminal, both from one ``RunSummary``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from core.budget import Budget
from producer.canary import CanaryVerdict
from producer.cascade import CascadePlan
from producer.terminal import show
from storage.ledger import Ledger, Run, RunStatus, ShardStatus
from storage.ledger.leases import PAUSED_BY

_STATUS_STYLES: dict[str, str] = {
    RunStatus.COMPLETED: "bold green",
    RunStatus.COMPLETED_WITH_FAILURES: "bold red",
    RunStatus.COMPLETED_WITH_DRIFT: "bold red",
    RunStatus.PAUSED_BUDGET: "bold red",
    RunStatus.RUNNING: "bold yellow",
    RunStatus.QUEUED: "bold yellow",
}


@dataclass(frozen=True)
class FailedShard:
    shard_id: int
    attempts: int
    error: str | None


@dataclass(frozen=True)
class RunSummary:
    """What a summary says about a run: labelled values, then up to ``max_failed`` failed shards and
    how many more there are."""

    run_id: str
    status: str
    fields: tuple[tuple[str, str], ...]
    failed: tuple[FailedShard, ...]
    more_failed: int


def summarize_run(ledger: Ledger, run_id: str, max_failed: int | None = 10) -> RunSummary:
    """The run's status, shards, pairs and usage, and its failed shards with their errors."""
    run = ledger.get_run(run_id)
    if run is None:
        raise KeyError(run_id)
    progress = ledger.progress(run_id)
    usage = ledger.usage_totals(run_id)
    elapsed = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    fields = [
        ("model", run.model),
        ("corpus", run.corpus_path),
        (
            "shards",
            f"{progress.shards_done} done, {progress.shards_failed} failed, {progress.shards_total} total",
        ),
        ("pairs", f"{progress.pairs_done:,} scored of {progress.pairs_total:,} ({run.n_queries:,} queries)"),
        ("attempts", f"{usage.attempts} ({usage.failed_attempts} failed) on {usage.workers} worker(s)"),
        ("tokens", f"{usage.tokens:,}"),
        ("device time", f"{usage.device_seconds:,.1f}s"),
    ]
    if usage.truncation_rate is not None:
        fields.append(
            (
                "truncated",
                f"{usage.truncated_pairs:,} of {usage.pairs_checked:,} scored pairs "
                f"({usage.truncation_rate:.1%}) cut to fit the model's limit (RERANK_MAX_LENGTH)",
            )
        )
    api = ledger.api_usage_totals(run_id)
    if api.requests:
        cost = "unknown (no price in the price table)" if api.cost_usd is None else f"${api.cost_usd:,.4f}"
        fields.append(("requests", f"{api.requests:,} ({api.failed_requests:,} failed)"))
        if api.search_units:
            fields.append(("search units", f"{api.search_units:,}"))
        fields.append(("cost", cost))
    budget = Budget.from_options(run.options)
    if budget.limited:
        spent_usd, spent_tokens = ledger.spent(run_id)
        fields.append(("budget", f"{budget.describe()}; spent ${spent_usd:,.4f} and {spent_tokens:,} tokens"))
    if run.status == RunStatus.PAUSED_BUDGET:
        fields.append(("paused", f"{run.options.get(PAUSED_BY)}; go on with submit.py --resume {run_id}"))
    if run.shadow_of is not None:
        fields.append(("shadow of", f"run {run.shadow_of} (its usage counts as the shadow's)"))
    for shadow in ledger.shadow_runs(run.run_id):
        fields.append(("shadow", f"run {shadow.run_id}: {shadow.model}, {shadow.status}"))
    fields += _stage_fields(ledger, run)
    canary = run.options.get("canary") if run.options else None
    if isinstance(canary, dict):
        verdict = canary.get("verdict")
        fields.append(
            (
                "canary",
                f"{canary.get('pairs', 0):,} pairs: "
                + (
                    CanaryVerdict.from_record(verdict).describe()
                    if isinstance(verdict, dict)
                    else "not checked yet"
                ),
            )
        )
    if elapsed:
        fields.append(("wall time", f"{elapsed:,.1f}s ({progress.pairs_done / elapsed:,.0f} pairs/s)"))
    failed = ledger.shards(run_id, statuses=[ShardStatus.FAILED])
    shown = failed[:max_failed]
    return RunSummary(
        run_id=run.run_id,
        status=run.status,
        fields=tuple(fields),
        failed=tuple(FailedShard(shard.shard_id, shard.attempts, shard.error) for shard in shown),
        more_failed=len(failed) - len(shown),
    )


def run_summary(ledger: Ledger, run_id: str, max_failed: int | None = 10) -> str:
    """The run's summary as plain lines (what logs and scripts parse)."""
    return summary_text(summarize_run(ledger, run_id, max_failed))


def _stage_fields(ledger: Ledger, run: Run) -> list[tuple[str, str]]:
    """A cascade's stages, on its first run's summary; a later stage names its cascade."""
    if run.cascade_of is not None:
        return [
            ("stage", f"{run.stage} of cascade {run.cascade_of} (top {run.options.get('top_k')} a query)")
        ]
    plan = CascadePlan.of(run)
    if plan is None:
        return []
    started = {later.stage: later for later in ledger.stage_runs(run.run_id)}
    fields = [("stage 1", f"run {run.run_id}: {run.model}, every pair, {run.status}")]
    for number, stage in enumerate(plan.stages, start=2):
        later = started.get(number)
        if later is None:
            fields.append(
                (f"stage {number}", f"{stage.model}, top {stage.top_k}: waits for stage {number - 1}")
            )
            continue
        progress = ledger.progress(later.run_id)
        fields.append(
            (
                f"stage {number}",
                f"run {later.run_id}: {stage.model}, top {stage.top_k} a query ({later.n_pairs:,} pairs), "
                f"{progress.shards_done}/{progress.shards_total} shards done, {later.status}",
            )
        )
    return fields


def show_run_summary(ledger: Ledger, run_id: str, stream: TextIO, max_failed: int | None = 10) -> None:
    """Print the run's summary on ``stream``: a table on a terminal, the plain lines elsewhere."""
    summary = summarize_run(ledger, run_id, max_failed)
    show(stream, summary_text(summary), summary_table(summary))


def summary_text(summary: RunSummary) -> str:
    lines = [f"run {summary.run_id}: {summary.status}"]
    lines += [f"  {label:<12} {value}" for label, value in summary.fields]
    lines += [
        f"  failed shard {shard.shard_id} ({shard.attempts} attempts): {shard.error}"
        for shard in summary.failed
    ]
    if summary.more_failed:
        lines.append(
            f"  ... and {summary.more_failed} more failed shards (scripts/status.py {summary.run_id})"
        )
    return "\n".join(lines)


def summary_table(summary: RunSummary) -> RenderableType:
    table = Table(title=f"run {summary.run_id}", title_justify="left", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("status", Text(summary.status, style=_STATUS_STYLES.get(summary.status, "")))
    for label, value in summary.fields:
        table.add_row(label, value)
    if not summary.failed:
        return table
    failures = Table(title="failed shards", title_justify="left", title_style="bold red")
    failures.add_column("shard", justify="right")
    failures.add_column("attempts", justify="right")
    failures.add_column("error", overflow="fold")
    for shard in summary.failed:
        failures.add_row(str(shard.shard_id), str(shard.attempts), shard.error or "")
    parts: list[RenderableType] = [table, failures]
    if summary.more_failed:
        parts.append(
            Text(f"... and {summary.more_failed} more failed shards (scripts/status.py {summary.run_id})")
        )
    return Group(*parts)
