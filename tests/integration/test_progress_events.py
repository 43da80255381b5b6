"""An API model reports a shard's progress per answered request (the throttled counts themselves are
tested in tests/unit/test_progress_reports.py)."""

from __future__ import annotations

from testkit.api_servers import FakeRerankServer, running
from tests.api_fixtures import API_KEY, api_reranker, api_settings, pairs
from worker.backends.progress_sink import listening


class Sink:
    def __init__(self) -> None:
        self.reports: list[int] = []

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.reports.append(pairs)


def test_an_api_model_reports_the_pairs_of_each_answered_request(redis_url: str, redis_prefix: str) -> None:
    queries, texts = pairs(n_queries=1, docs_per_query=70, seed=2)  # TEI takes 32 texts a request
    sink = Sink()
    with (
        running(FakeRerankServer("tei", api_key=API_KEY)) as server,
        api_reranker("tei", api_settings(server, redis_url, redis_prefix)) as reranker,
        listening(sink),
    ):
        reranker.score(queries, texts)
    assert sorted(sink.reports) == [6, 32, 32]
