"""Fleet-wide rate limits in Redis: several workers share one budget per (provider, key), never exceed
the provider's limit, and all pause when it answers 429 with Retry-After."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from redis import Redis

from core.broker.url import connect
from core.settings import Settings
from testkit.api_servers import FakeRerankServer, Fault, running
from tests.api_fixtures import API_KEY, api_reranker, api_settings, expected_scores, pairs
from worker.backends.api.rate_limiter import FleetRateLimiter, RateLimits


def _score_in_workers(settings: Settings, workers: int, n_queries: int, docs: int) -> float:
    """``workers`` rerankers (each its own limiter, Redis connection and HTTP pool, like separate
    processes) score their own pairs at once; checks every score and returns the seconds taken."""
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            queries, texts = pairs(n_queries, docs, seed=seed)
            with api_reranker("openai-rerank", settings) as reranker:
                result = reranker.score(queries, texts)
            np.testing.assert_allclose(
                result.scores, expected_scores("openai-rerank", queries, texts), atol=1e-6
            )
        except BaseException as exc:
            failures.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if failures:
        raise failures[0]
    return time.monotonic() - started


def test_workers_share_the_request_budget_and_never_exceed_it(redis_url: str, redis_prefix: str) -> None:
    limit, window = 8, 1.0
    with running(FakeRerankServer("openai-rerank", API_KEY, limit_requests=limit, window_s=window)) as server:
        settings = api_settings(
            server, redis_url, redis_prefix, api_requests_per_minute=limit, api_max_documents=2
        )
        seconds = _score_in_workers(settings, workers=3, n_queries=4, docs=4)  # 8 requests each
    assert server.over_limit == 0 and server.statuses() == Counter({200: 24})
    assert server.busiest_window()[0] == limit
    # 24 requests at 8 a window: the third 8 cannot start before two windows have passed.
    assert seconds >= 2 * window - 0.05


def test_workers_share_the_token_budget(redis_url: str, redis_prefix: str) -> None:
    token_limit, window = 400, 1.0
    server = FakeRerankServer("openai-rerank", API_KEY, limit_tokens=token_limit, window_s=window)
    with running(server):
        settings = api_settings(
            server, redis_url, redis_prefix, api_tokens_per_minute=token_limit, api_max_documents=3
        )
        _score_in_workers(settings, workers=2, n_queries=5, docs=3)
    scored = server.scored()
    assert server.over_limit == 0 and len(scored) == 10
    assert server.busiest_window()[1] <= token_limit < sum(request.tokens for request in scored)


def test_a_limit_only_the_server_knows_is_obeyed_through_its_429s(redis_url: str, redis_prefix: str) -> None:
    """No client-side limit: the server refuses the excess, the fleet waits as told, nothing is lost."""
    with running(FakeRerankServer("openai-rerank", API_KEY, limit_requests=6, window_s=1.0)) as server:
        settings = api_settings(server, redis_url, redis_prefix, api_max_documents=2, api_max_retries=10)
        _score_in_workers(settings, workers=2, n_queries=4, docs=4)
    statuses = server.statuses()
    assert statuses[200] == 16 and statuses[429] == server.over_limit > 0


def test_retry_after_pauses_every_worker_and_nothing_is_lost(redis_url: str, redis_prefix: str) -> None:
    with running(FakeRerankServer("openai-rerank", API_KEY)) as server:
        server.inject(Fault("429", seconds=1.0))
        settings = api_settings(server, redis_url, redis_prefix, api_max_documents=2, api_concurrency=2)
        seconds = _score_in_workers(settings, workers=2, n_queries=5, docs=2)
    assert server.statuses() == Counter({200: 10, 429: 1})
    assert server.early_after_429 == 0  # no worker sent anything while the Retry-After ran
    assert seconds >= 1.0


def budget_keys(client: Redis, prefix: str) -> list[str]:
    return [key.decode() for key in client.scan_iter(match=f"{prefix}ratelimit:*")]


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def test_a_request_counts_from_its_start_until_one_window_after_its_answer(
    redis_url: str, redis_prefix: str
) -> None:
    client = connect(redis_url)
    limits = RateLimits(requests_per_window=2, tokens_per_window=None, window_s=0.5)
    limiter = FleetRateLimiter(client, redis_prefix, "nim", "f" * 20, limits, lease_s=30)
    first, second = limiter.acquire(1), limiter.acquire(1)
    releaser = threading.Timer(0.3, limiter.release, args=(first, 1))
    releaser.start()
    # In flight, the first request holds its place; freed 0.3 s + one window later.
    waited = _timed(lambda: limiter.acquire(1))
    assert 0.8 - 0.05 <= waited < 1.2
    limiter.release(second, 1)
    assert limiter.pause(0.4) == pytest.approx(0.4, abs=0.05)
    assert limiter.pause(0.1) > 0.3  # a shorter pause never cuts a longer one
    keys = budget_keys(client, redis_prefix)
    assert keys and all("ratelimit:nim:ffffffffffffffffffff" in key for key in keys)
    client.close()


def test_the_budget_in_redis_is_named_by_a_hash_of_the_key(redis_url: str, redis_prefix: str) -> None:
    with running(FakeRerankServer("openai-rerank", API_KEY)) as server:
        settings = api_settings(server, redis_url, redis_prefix)
        with api_reranker("openai-rerank", settings) as reranker:
            reranker.score(["q"], ["d"])
            fingerprint = reranker.sender.credentials.fingerprint
    client = connect(redis_url)
    keys = budget_keys(client, redis_prefix)
    client.close()
    assert keys and all(f"ratelimit:openai-rerank:{fingerprint}:" in key for key in keys)
    assert not any(API_KEY in key for key in keys)
