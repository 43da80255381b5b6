"""The graded LLM judge (``llm-judge:MODEL?num_classes=C``) end to end against a chat-completions server
that answers a grade prompt with digit log-probabilities whose expected grade it knows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelSpecError
from testkit.api_dialects import expected_judge_probability
from testkit.api_servers import FakeRerankServer, running
from tests.api_fixtures import API_KEY, api_reranker, api_settings, pairs, write_prices


@pytest.mark.parametrize("num_classes", [2, 4, 10])
def test_the_graded_judge_scores_the_expected_grade(
    num_classes: int, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    queries, texts = pairs(n_queries=2, docs_per_query=4, seed=7)
    with running(FakeRerankServer("llm-judge", api_key=API_KEY)) as server:
        settings = api_settings(server, redis_url, redis_prefix, prices_path=write_prices(tmp_path))
        with api_reranker("llm-judge", settings, model=f"m1?num_classes={num_classes}") as reranker:
            result = reranker.score(queries, texts)
    # The server answers a yes/no prompt with yes/no tokens, which carry no grade: only a grade prompt
    # for grades 0..C-1 gets digits whose expected grade is this.
    expected = [expected_judge_probability(query, text) for query, text in zip(queries, texts, strict=True)]
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-6)
    assert server.statuses() == Counter({200: len(texts)})
    assert all(record.output_tokens == 1 for record in result.requests)


@pytest.mark.parametrize("value", ["1", "11", "four"])
def test_a_bad_num_classes_is_refused_at_load(value: str, redis_url: str, redis_prefix: str) -> None:
    with running(FakeRerankServer("llm-judge")) as server:
        settings = api_settings(server, redis_url, redis_prefix)
        with (
            pytest.raises(ModelSpecError, match=rf"option num_classes=.*{value}"),
            api_reranker("llm-judge", settings, model=f"m1?num_classes={value}"),
        ):
            pass
