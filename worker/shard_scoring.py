"""Scores for every pair of one shard input: the model runs on the pairs that need it, scores carried
over from an earlier run (incremental runs) fill in the rest, with each pair's provenance."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from core.field_scoring import FieldPlan
from core.score_transforms import score_scale
from storage.corpus.layout import field_column
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
    field_scores: dict[str, np.ndarray] = field(default_factory=dict)  # multi-field: each field's scores


def score_shard_pairs(reranker: Reranker, pairs: pa.Table) -> ShardScores:
    plan = FieldPlan.from_schema(pairs.schema)
    if plan is not None:
        return _score_fields(reranker, pairs, plan)
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


def _score_fields(reranker: Reranker, pairs: pa.Table, plan: FieldPlan) -> ShardScores:
    """Every field of every pair in one call (the backend scores a text two fields share once); each
    pair's score is the plan's weighted sum. Multi-field runs carry no scores over (``--reuse``)."""
    n_pairs = pairs.num_rows
    queries = pairs.column("query").to_pylist()
    texts: list[str] = []
    for index, column in enumerate(plan.columns):
        values = pairs.column("text" if index == 0 else field_column(column)).to_pylist()
        texts += [text or "" for text in values]
    result = reranker.score(queries * len(plan.names), texts)
    per_field = np.asarray(result.scores).reshape(len(plan.names), n_pairs)
    scale = score_scale(str(reranker.spec), reranker.describe())
    combined = plan.combine(per_field, pairs.column("query_id"), scale).astype(np.float32)
    pair_tokens = None if result.pair_tokens is None else result.pair_tokens.reshape(-1, n_pairs).sum(axis=0)
    truncated = None if result.truncated is None else np.any(result.truncated.reshape(-1, n_pairs), axis=0)
    result = replace(result, pair_tokens=pair_tokens, truncated=truncated)
    provenance = PairProvenance(
        tokens=pa.array(pair_tokens, pa.int32())
        if pair_tokens is not None
        else pa.nulls(n_pairs, pa.int32()),
        truncated=pa.array(truncated, pa.bool_()) if truncated is not None else pa.nulls(n_pairs, pa.bool_()),
        model=str(reranker.spec),
    )
    hashes = pairs.column(CONTENT_HASH) if CONTENT_HASH in pairs.column_names else None
    fields = {name: per_field[index].astype(np.float32) for index, name in enumerate(plan.names)}
    return ShardScores(combined, n_pairs, result, hashes, provenance, fields)
