"""Scores for every pair of one shard input: the model runs on the pairs that need it, scores carried
over from an earlier run (incremental runs) fill in the rest, with each pair's provenance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from storage.shards.annotations import (
    CONTENT_HASH,
    REUSED_TOKENS,
    REUSED_TRUNCATED,
    merge_carried,
    merge_reused,
    scores_to_compute,
)
from storage.shards.scores import PairProvenance
from worker.backends.base import Reranker, ScoreResult


@dataclass(frozen=True)
class ShardScores:
    scores: np.ndarray  # float32, one per row of the shard input
    computed: int  # pairs the model scored
    result: ScoreResult
    content_hashes: pa.ChunkedArray | None
    provenance: PairProvenance


def score_shard_pairs(reranker: Reranker, pairs: pa.Table) -> ShardScores:
    rows = scores_to_compute(pairs)
    selected = pairs.take(pa.array(rows)) if len(rows) < pairs.num_rows else pairs
    result = reranker.score(selected.column("query").to_pylist(), selected.column("text").to_pylist())
    scores = merge_reused(pairs, rows, result.scores)
    hashes = pairs.column(CONTENT_HASH) if CONTENT_HASH in pairs.column_names else None
    provenance = PairProvenance(
        tokens=merge_carried(pairs, REUSED_TOKENS, rows, result.pair_tokens, pa.int32()),
        truncated=merge_carried(pairs, REUSED_TRUNCATED, rows, result.truncated, pa.bool_()),
        model=str(reranker.spec),
    )
    return ShardScores(scores, len(rows), result, hashes, provenance)
