"""The null scorer: no model, a deterministic score per pair, loaded like any local kind."""

from __future__ import annotations

import numpy as np

from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends import load_reranker


def test_null_scores_are_deterministic_distinct_and_in_the_unit_interval() -> None:
    reranker = load_reranker(ModelSpec.parse("null:anything"), Settings(device="cpu"))
    queries = ["q1", "q1", "q2", "q1"]
    texts = ["a", "b", "a", "a"]

    first = reranker.score(queries, texts)
    again = reranker.score(queries[::-1], texts[::-1])

    assert first.scores.dtype == np.float32 and len(first.scores) == 4
    assert np.all((first.scores >= 0) & (first.scores < 1))
    assert first.scores[0] == first.scores[3] and len(set(first.scores[:3].tolist())) == 3
    np.testing.assert_array_equal(again.scores, first.scores[::-1])
    assert first.tokens > 0 and first.device_seconds == 0.0
    assert reranker.describe()["kind"] == "null"
