"""Build real API rerankers (real HTTP, real Redis limiter) pointed at a fake provider server, and run API
worker fleets end to end against one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.broker.url import connect
from core.model_spec import ModelSpec
from core.settings import Settings
from testkit.api_dialects import expected_judge_probability, expected_score
from testkit.api_servers import FakeRerankServer
from testkit.fleet import run_script, start_workers
from testkit.services import delete_prefixed
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


def redis_contents(redis_url: str, prefix: str) -> list[bytes]:
    """Every key under ``prefix`` and every value it holds, whatever its type."""
    client = connect(redis_url)
    found: list[bytes] = []
    try:
        for key in client.scan_iter(match=f"{prefix}*"):
            found.append(key)
            kind = client.type(key).decode()
            if kind == "string":
                found.append(client.get(key) or b"")
            elif kind == "hash":
                found.extend(b"%s=%s" % item for item in client.hgetall(key).items())
            elif kind == "list":
                found.extend(client.lrange(key, 0, -1))
            elif kind == "set":
                found.extend(client.smembers(key))
            elif kind == "zset":
                found.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
    finally:
        client.close()
    return found


@dataclass(frozen=True)
class FleetRun:
    """What an end-to-end run of API workers left: submit.py's process, the workers' log and what Redis
    held under the run's prefix when it ended."""

    submitted: subprocess.CompletedProcess[str]
    log: str
    redis: list[bytes]

    @property
    def run_id(self) -> str:
        return self.submitted.stdout.strip().splitlines()[-1]


def score_with_api_workers(
    worker_args: list[str],
    spec: ModelSpec,
    processes: int,
    worker_env: dict[str, str],
    submit_env: dict[str, str],
    corpus_path: Path,
    out: Path,
    redis_url: str,
    prefix: str,
    log_path: Path,
    submit_args: tuple[str, ...] = (),
) -> FleetRun:
    """``workers.py WORKER_ARGS`` (``processes`` of them), then ``submit.py CORPUS --model SPEC --wait
    --out OUT``; the fleet is stopped and the prefix's Redis keys read, then deleted. Asserts that
    submit.py succeeded."""
    try:
        fleet = start_workers(worker_args, spec, processes, worker_env, redis_url, prefix, log_path)
        try:
            submitted = run_script(
                "submit.py",
                str(corpus_path),
                "--model",
                str(spec),
                "--wait",
                "--out",
                str(out),
                "--timeout",
                "120",
                *submit_args,
                env=submit_env,
            )
        finally:
            fleet.stop()
        assert submitted.returncode == 0, submitted.stderr + fleet.log()[-3000:]
        held = redis_contents(redis_url, prefix)
    finally:
        delete_prefixed(redis_url, prefix)
    return FleetRun(submitted, log_path.read_text(), held)


def assert_scored_once_with_the_apis_score(corpus: pa.Table, out: Path) -> None:
    """One row per corpus pair in ``out``, each with the fake provider's score of the pair."""
    texts = {(row["query_id"], row["doc_id"]): (row["query"], row["text"]) for row in corpus.to_pylist()}
    scores = pq.read_table(out).to_pylist()
    assert len(scores) == corpus.num_rows == len({(row["query_id"], row["doc_id"]) for row in scores})
    for row in scores:
        expected = expected_score(*texts[(row["query_id"], row["doc_id"])])
        assert row["score"] == pytest.approx(expected, abs=1e-6)
