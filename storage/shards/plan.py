"""Cutting a validated corpus into shards of whole queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage.corpus.validation import CorpusSummary


@dataclass(frozen=True)
class ShardPlan:
    """Queries ``first_query`` up to (not including) ``stop_query``, in order of first appearance."""

    shard_id: int
    first_query: int
    stop_query: int
    n_pairs: int

    @property
    def n_queries(self) -> int:
        return self.stop_query - self.first_query


def plan_shards(summary: CorpusSummary, shard_pairs: int) -> list[ShardPlan]:
    """Greedy shards of consecutive whole queries (first-appearance order), each about shard_pairs pairs.

    A shard takes queries while it stays within shard_pairs, then one more if that lands nearer to
    shard_pairs than stopping would. A query with more than shard_pairs pairs gets a shard of its
    own; a query is never split.
    """
    if shard_pairs < 1:
        raise ValueError(f"shard_pairs must be at least 1, got {shard_pairs}")
    counts = summary.query_pair_counts
    pairs_before = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    n_queries = counts.size
    plans: list[ShardPlan] = []
    first = 0
    while first < n_queries:
        budget_end = pairs_before[first] + shard_pairs
        stop = int(np.searchsorted(pairs_before, budget_end, side="right")) - 1
        if stop <= first:
            stop = first + 1
        elif stop < n_queries and counts[stop] <= shard_pairs:
            shortfall = budget_end - pairs_before[stop]
            overshoot = pairs_before[stop + 1] - budget_end
            if overshoot < shortfall:
                stop += 1
        plans.append(ShardPlan(len(plans), first, stop, int(pairs_before[stop] - pairs_before[first])))
        first = stop
    return plans
