"""Checks of a run's output and ledger that several test modules make, and a run recorded for them."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pyarrow as pa
from sqlalchemy import func, select

from storage.ledger import Ledger, Run, ShardPlanRow, utcnow
from storage.ledger.schema import Usage
from storage.shards.scores import ranks_within_queries


def reference_scores(model_path: Path, table: pa.Table) -> np.ndarray:
    """The scores sentence-transformers' own CrossEncoder gives the pairs of ``table``, in order."""
    from sentence_transformers import CrossEncoder

    encoder = CrossEncoder(str(model_path), device="cpu")
    pairs = list(zip(table.column("query").to_pylist(), table.column("text").to_pylist(), strict=True))
    return np.asarray(encoder.predict(pairs, batch_size=64), dtype=np.float32)


def assert_output_matches(corpus: pa.Table, scores: pa.Table, expected: np.ndarray) -> None:
    """One score row per corpus pair, each with the expected score (in corpus order) and its rank."""
    assert scores.num_rows == corpus.num_rows
    keys = list(zip(scores.column("query_id").to_pylist(), scores.column("doc_id").to_pylist(), strict=True))
    assert len(set(keys)) == len(keys)
    position = {
        key: i
        for i, key in enumerate(
            zip(corpus.column("query_id").to_pylist(), corpus.column("doc_id").to_pylist(), strict=True)
        )
    }
    assert set(keys) == set(position)
    order = np.array([position[key] for key in keys])
    got = scores.column("score").to_numpy()
    np.testing.assert_allclose(got, expected[order], atol=1e-4, rtol=0)
    expected_ranks = ranks_within_queries(scores.column("query_id"), got)
    assert scores.column("rank").to_numpy().tolist() == expected_ranks.tolist()
    assert scores.schema.field("score").type == pa.float32()
    assert scores.schema.field("rank").type == pa.int32()


def assert_usage_counted_once(ledger: Ledger, run_id: str) -> None:
    """No (shard, attempt, request) has two usage rows in the run."""
    with ledger.session() as session:
        duplicates = session.execute(
            select(Usage.shard_id, Usage.attempt, Usage.request_index, func.count())
            .where(Usage.run_id == run_id)
            .group_by(Usage.shard_id, Usage.attempt, Usage.request_index)
            .having(func.count() > 1)
        ).all()
    assert duplicates == [], duplicates


def record_run(ledger: Ledger, shards: int, model: str = "cross-encoder:m") -> str:
    """A queued run of ``shards`` one-pair shards, recorded and enqueued in the ledger (nothing sent);
    its inputs and outputs are at the keys the producer would give them. Returns its id."""
    run_id = f"test-{secrets.token_hex(4)}"
    run = Run(
        run_id=run_id,
        model=model,
        queue=f"rerank.test-{secrets.token_hex(3)}",
        corpus_path="corpus.parquet",
        status="queued",
        n_shards=shards,
        n_pairs=shards,
        n_queries=shards,
        options={},
        created_at=utcnow(),
    )
    keys = [
        (f"runs/{run_id}/_inputs/shard-{i:05d}.parquet", f"runs/{run_id}/shard-{i:05d}.parquet")
        for i in range(shards)
    ]
    ledger.create_run(run, [ShardPlanRow(i, 1, 1, *keys[i]) for i in range(shards)])
    ledger.mark_enqueued(run_id, range(shards))
    return run_id
