"""Checks of a run's output that several test modules make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

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
