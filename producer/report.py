"""Human-readable summaries of a run, from the ledger."""

from __future__ import annotations

from storage.ledger import Ledger, ShardStatus


def run_summary(ledger: Ledger, run_id: str, max_failed: int | None = 10) -> str:
    """The run's status, shards, pairs and usage, and its failed shards with their errors."""
    run = ledger.get_run(run_id)
    if run is None:
        raise KeyError(run_id)
    progress = ledger.progress(run_id)
    usage = ledger.usage_totals(run_id)
    elapsed = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    lines = [
        f"run {run.run_id}: {run.status}",
        f"  model        {run.model}",
        f"  corpus       {run.corpus_path}",
        f"  shards       {progress.shards_done} done, {progress.shards_failed} failed, "
        f"{progress.shards_total} total",
        f"  pairs        {progress.pairs_done:,} scored of {progress.pairs_total:,} "
        f"({run.n_queries:,} queries)",
        f"  attempts     {usage.attempts} ({usage.failed_attempts} failed) on {usage.workers} worker(s)",
        f"  tokens       {usage.tokens:,}",
        f"  device time  {usage.device_seconds:,.1f}s",
    ]
    api = ledger.api_usage_totals(run_id)
    if api.requests:
        cost = "unknown (no price in the price table)" if api.cost_usd is None else f"${api.cost_usd:,.4f}"
        lines.append(f"  requests     {api.requests:,} ({api.failed_requests:,} failed)")
        if api.search_units:
            lines.append(f"  search units {api.search_units:,}")
        lines.append(f"  cost         {cost}")
    if elapsed:
        lines.append(f"  wall time    {elapsed:,.1f}s ({progress.pairs_done / elapsed:,.0f} pairs/s)")
    failed = ledger.shards(run_id, statuses=[ShardStatus.FAILED])
    for shard in failed[:max_failed]:
        lines.append(f"  failed shard {shard.shard_id} ({shard.attempts} attempts): {shard.error}")
    if max_failed is not None and len(failed) > max_failed:
        lines.append(f"  ... and {len(failed) - max_failed} more failed shards (scripts/status.py {run_id})")
    return "\n".join(lines)
