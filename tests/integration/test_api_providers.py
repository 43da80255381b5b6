"""Each provider's client against a real HTTP server speaking that API: shapes, splitting, usage, faults."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.errors import PermanentProviderError, ProviderError
from core.usage import RequestOutcome
from testkit.api_dialects import PATHS, TEI_MAX_CLIENT_BATCH, server_tokens
from testkit.api_servers import FakeRerankServer, Fault, running
from tests.api_fixtures import API_KEY, api_reranker, api_settings, expected_scores, pairs, write_prices


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    return write_prices(tmp_path)


@pytest.fixture
def openai_server() -> Iterator[FakeRerankServer]:
    with running(FakeRerankServer("openai-rerank", api_key=API_KEY)) as server:
        yield server


@pytest.mark.parametrize("flavor", sorted(PATHS))
def test_every_pair_scored_once_with_the_apis_absolute_score(
    flavor: str, redis_url: str, redis_prefix: str, prices: Path
) -> None:
    queries, texts = pairs(n_queries=4, docs_per_query=7, seed=1)
    with running(FakeRerankServer(flavor, api_key=API_KEY)) as server:
        settings = api_settings(server, redis_url, redis_prefix, api_max_documents=3, prices_path=prices)
        with api_reranker(flavor, settings) as reranker:
            result = reranker.score(queries, texts)
    # Queries are split over several requests; each pair keeps its own absolute score.
    np.testing.assert_allclose(result.scores, expected_scores(flavor, queries, texts), rtol=0, atol=1e-6)
    expected_requests = len(texts) if flavor == "llm-judge" else 4 * 3  # 7 documents: 3 + 3 + 1
    assert server.statuses() == Counter({200: expected_requests})
    assert sum(request.documents for request in server.scored()) == len(texts)
    records = result.requests
    assert [record.request_index for record in records] == list(range(1, expected_requests + 1))
    assert all(record.outcome is RequestOutcome.OK and record.provider == flavor for record in records)
    assert sum(record.pairs for record in records) == len(texts)
    if flavor in ("jina", "voyage", "openai-rerank", "vllm-score", "vllm-classify", "nim", "llm-judge"):
        # The provider reports usage: the records hold its counts.
        assert sorted(record.tokens for record in records) == sorted(r.tokens for r in server.scored())
    if flavor == "cohere":
        assert [record.search_units for record in records] == [1] * expected_requests
        assert sum(record.cost_usd or 0 for record in records) == pytest.approx(0.002 * expected_requests)
    if flavor == "llm-judge":
        assert all(record.output_tokens == 1 for record in records)
        expected_cost = sum((record.tokens - 1) * 1.0 / 1e6 + 4.0 / 1e6 for record in records)
        assert sum(record.cost_usd or 0 for record in records) == pytest.approx(expected_cost)
    assert API_KEY not in str(reranker.describe())


def test_tei_requests_stay_within_its_client_batch(redis_url: str, redis_prefix: str) -> None:
    queries, texts = pairs(n_queries=1, docs_per_query=70, seed=2)
    with (
        running(FakeRerankServer("tei", api_key=API_KEY)) as server,
        api_reranker("tei", api_settings(server, redis_url, redis_prefix)) as reranker,
    ):
        result = reranker.score(queries, texts)
    np.testing.assert_allclose(result.scores, expected_scores("tei", queries, texts), atol=1e-6)
    assert sorted(request.documents for request in server.scored()) == [6, TEI_MAX_CLIENT_BATCH, 32]


def test_reported_tokens_are_recorded_and_raise_later_estimates(redis_url: str, redis_prefix: str) -> None:
    """The provider counts 1.5x our estimate: the ledger gets its counts, and the limiter learns."""
    queries, texts = pairs(n_queries=3, docs_per_query=4, seed=3)
    with (
        running(FakeRerankServer("openai-rerank", api_key=API_KEY, token_scale=1.5)) as server,
        api_reranker("openai-rerank", api_settings(server, redis_url, redis_prefix)) as reranker,
    ):
        result = reranker.score(queries, texts)
        factor = reranker.sender.calibration.factor
    estimated = sum(server_tokens(q, [t]) for q, t in zip(queries, texts, strict=True))
    assert sum(record.tokens for record in result.requests) == sum(r.tokens for r in server.scored())
    assert sum(record.tokens for record in result.requests) > estimated
    assert factor == pytest.approx(1.5, rel=0.05)


def test_transient_failures_are_retried_and_every_attempt_recorded(
    openai_server: FakeRerankServer, redis_url: str, redis_prefix: str
) -> None:
    queries, texts = pairs(n_queries=2, docs_per_query=5, seed=4)
    openai_server.inject(Fault("status", status=500))
    openai_server.inject(Fault("status", status=503))
    openai_server.inject(Fault("malformed"))
    openai_server.inject(Fault("slow", seconds=1.0))
    settings = api_settings(openai_server, redis_url, redis_prefix, api_timeout_s=0.4, api_concurrency=1)
    with api_reranker("openai-rerank", settings) as reranker:
        result = reranker.score(queries, texts)
    np.testing.assert_allclose(result.scores, expected_scores("openai-rerank", queries, texts), atol=1e-6)
    outcomes = Counter(record.outcome for record in result.requests)
    assert outcomes == {
        RequestOutcome.SERVER_ERROR: 2,
        RequestOutcome.MALFORMED: 1,
        RequestOutcome.TIMEOUT: 1,
        RequestOutcome.OK: 2,
    }
    # One record per request the server received, failed ones included (they may be billed).
    assert len(result.requests) == len(openai_server.received)
    failed = [record for record in result.requests if record.outcome is not RequestOutcome.OK]
    assert all(record.tokens > 0 for record in failed)


def test_a_4xx_fails_at_once_with_the_providers_message_and_no_key(
    openai_server: FakeRerankServer, redis_url: str, redis_prefix: str
) -> None:
    openai_server.inject(Fault("reject"))
    queries, texts = pairs(n_queries=1, docs_per_query=3)
    settings = api_settings(openai_server, redis_url, redis_prefix)
    with api_reranker("openai-rerank", settings) as reranker, pytest.raises(PermanentProviderError) as caught:
        reranker.score(queries, texts)
    message = str(caught.value)
    assert "HTTP 400" in message and "bad request from Bearer [redacted]" in message
    assert API_KEY not in message
    assert len(openai_server.received) == 1  # no retry loop
    [record] = caught.value.requests
    assert record.outcome is RequestOutcome.REJECTED and record.tokens == 0


def test_retries_run_out_into_a_transient_error_that_carries_the_usage(
    openai_server: FakeRerankServer, redis_url: str, redis_prefix: str
) -> None:
    openai_server.inject(Fault("status", status=502), count=3)
    settings = api_settings(openai_server, redis_url, redis_prefix, api_max_retries=2, api_concurrency=1)
    queries, texts = pairs(n_queries=1, docs_per_query=2)
    with api_reranker("openai-rerank", settings) as reranker, pytest.raises(ProviderError) as caught:
        reranker.score(queries, texts)
    assert not isinstance(caught.value, PermanentProviderError)
    assert "gave up after 3 attempts" in str(caught.value)
    assert [record.outcome for record in caught.value.requests] == [RequestOutcome.SERVER_ERROR] * 3


def test_a_wrong_key_is_permanent_and_never_echoed(redis_url: str, redis_prefix: str) -> None:
    with running(FakeRerankServer("cohere", api_key="the-right-key")) as server:
        settings = api_settings(server, redis_url, redis_prefix, cohere_api_key=API_KEY)
        with (
            api_reranker("cohere", settings) as reranker,
            pytest.raises(PermanentProviderError, match="HTTP 401: invalid api token") as caught,
        ):
            reranker.score(["q"], ["d"])
    assert API_KEY not in str(caught.value)
