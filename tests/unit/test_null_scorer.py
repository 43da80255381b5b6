"""The null scorer: no model, a deterministic score per pair, loaded like any local kind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.errors import ModelSpecError
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


def test_a_simulated_device_holds_each_call_for_its_pairs_and_serves_one_call_at_a_time() -> None:
    reranker = load_reranker(ModelSpec.parse("null:device?pairs_per_s=1000"), Settings(device="cpu"))
    plain = load_reranker(ModelSpec.parse("null:device"), Settings(device="cpu"))
    queries, texts = ["q"] * 50, [f"text {index}" for index in range(50)]
    results: list[float] = []

    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda: results.append(reranker.score(queries, texts).device_seconds))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [0.05, 0.05]
    assert time.monotonic() - started >= 0.1  # the two calls took turns on the one device
    np.testing.assert_array_equal(reranker.score(queries, texts).scores, plain.score(queries, texts).scores)


def test_a_simulated_device_needs_a_positive_rate() -> None:
    with pytest.raises(ModelSpecError, match="pairs_per_s"):
        load_reranker(ModelSpec.parse("null:device?pairs_per_s=0"), Settings(device="cpu"))
    with pytest.raises(ModelSpecError, match="pairs_per_s"):
        load_reranker(ModelSpec.parse("null:device?pairs_per_s=fast"), Settings(device="cpu"))
