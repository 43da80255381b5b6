"""Which of a run's shards hold what: the corpus, or the canary pairs scored beside it
(``producer.canary``), as the run's options in the ledger record them."""

from __future__ import annotations

from collections.abc import Sequence

from storage.ledger import Run, Shard

CANARY_DIRNAME = "_canary"  # the canary shards' scores, under the run directory (readers skip "_" dirs)


def canary_shard_ids(run: Run) -> set[int]:
    canary = run.options.get("canary") if run.options else None
    shard_ids = canary.get("shard_ids", []) if isinstance(canary, dict) else []
    return {int(shard_id) for shard_id in shard_ids}


def corpus_shards(run: Run, shards: Sequence[Shard]) -> list[Shard]:
    """The shards that hold the corpus, without the canary's."""
    canary = canary_shard_ids(run)
    return [shard for shard in shards if shard.shard_id not in canary]


def canary_shards(run: Run, shards: Sequence[Shard]) -> list[Shard]:
    canary = canary_shard_ids(run)
    return [shard for shard in shards if shard.shard_id in canary]
