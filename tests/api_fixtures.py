"""Build real API rerankers (real HTTP, real Redis limiter) pointed at a fake provider server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.api_dialects import expected_judge_probability, expected_score
from testkit.api_servers import FakeRerankServer
from worker.backends import load_reranker
from worker.backends.api.reranker import ApiReranker

API_KEY = "sk-test-7f3a9c1e5b2d4f6a8e0c"
PRICES = """
[[api]]
provider = "cohere"
model = "*"
since = 2020-01-01
usd_per_search_unit = 0.002

[[api]]
provider = "openai-rerank"
model = "*"
since = 2020-01-01
usd_per_million_tokens = 10.0

[[api]]
provider = "llm-judge"
model = "*"
since = 2020-01-01
usd_per_million_tokens = 1.0
usd_per_million_output_tokens = 4.0
"""


def write_prices(directory: Path) -> Path:
    path = directory / "prices.toml"
    path.write_text(PRICES)
    return path


def api_settings(server: FakeRerankServer, redis_url: str, prefix: str, **overrides: Any) -> Settings:
    """Settings for ``server.flavor`` at ``server.url``, fast retries, a 1 s rate window by default."""
    field = server.flavor.replace("-", "_")
    values: dict[str, Any] = {
        "broker_url": redis_url,
        "redis_key_prefix": prefix,
        f"{field}_base_url": server.url,
        f"{field}_api_key": server.api_key,
        "api_concurrency": 4,
        "api_rate_window_s": 1.0,
        "api_timeout_s": 5.0,
        "api_backoff_max_s": 0.05,
        **overrides,
    }
    return Settings(**values)


@contextmanager
def api_reranker(kind: str, settings: Settings, model: str = "m1") -> Iterator[ApiReranker]:
    reranker = load_reranker(ModelSpec.parse(f"{kind}:{model}"), settings)
    assert isinstance(reranker, ApiReranker)
    try:
        yield reranker
    finally:
        reranker.close()


def expected_scores(flavor: str, queries: list[str], texts: list[str]) -> np.ndarray:
    # The judge and the classifier answer probabilities; the rerank APIs the overlap score.
    score = expected_judge_probability if flavor in ("llm-judge", "vllm-classify") else expected_score
    return np.array(
        [score(query, text) for query, text in zip(queries, texts, strict=True)], dtype=np.float32
    )


def pairs(n_queries: int, docs_per_query: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Queries and texts, a query's documents interleaved with other queries' as shards may hold them."""
    rng = np.random.default_rng(seed)
    words = ["sky", "blue", "river", "bread", "passport", "engine", "garden", "music", "ocean", "coffee"]
    rows = []
    for q in range(n_queries):
        query = " ".join(rng.choice(words, size=3)) + f" q{q}"
        for _ in range(docs_per_query):
            rows.append((query, " ".join(rng.choice(words, size=int(rng.integers(3, 12))))))
    order = rng.permutation(len(rows))
    return [rows[i][0] for i in order], [rows[i][1] for i in order]
