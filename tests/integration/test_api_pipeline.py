"""End to end with a hosted API: submit.py -> Redis -> workers.py --api (real Celery worker processes)
-> a fake provider under a rate limit -> Parquet + ledger, and the API key nowhere but in the workers'
environment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from core.model_spec import ModelSpec
from storage.ledger import Ledger, Usage
from testkit import corpora
from testkit.api_servers import FakeRerankServer, Fault, running
from testkit.fleet import clean_env
from testkit.services import new_prefix
from tests.api_fixtures import (
    API_KEY,
    assert_scored_once_with_the_apis_score,
    score_with_api_workers,
    write_prices,
)

MODEL = "openai-rerank:bge-test"
LIMIT, WINDOW_S = 12, 1.0


def test_api_workers_score_a_corpus_under_the_fleets_limit(redis_url: str, tmp_path: Path) -> None:
    prefix = new_prefix()
    data = tmp_path / "data"
    shared = {"data_dir": str(data), "broker_url": redis_url, "redis_key_prefix": prefix, "heartbeat_s": "1"}
    server = FakeRerankServer("openai-rerank", api_key=API_KEY, limit_requests=LIMIT, window_s=WINDOW_S)
    server.inject(Fault("status", status=500))
    # Only the workers know the key; submit.py never sees it.
    worker_env = clean_env(
        **shared,
        openai_rerank_api_key=API_KEY,
        api_requests_per_minute=str(LIMIT),
        api_rate_window_s=str(WINDOW_S),
        api_max_documents="4",
        api_backoff_max_s="0.05",
        prices_path=str(write_prices(tmp_path)),
    )
    corpus = corpora.long_corpus(n_queries=12, docs_per_query=6, seed=5)  # 2 requests per query
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    args = ["--api", "openai-rerank", "--model", "bge-test", "--processes", "2", "--concurrency", "3"]
    with running(server):
        worker_env["RERANK_OPENAI_RERANK_BASE_URL"] = server.url
        run = score_with_api_workers(
            args,
            ModelSpec.parse(MODEL),
            2,
            worker_env,
            clean_env(**shared),
            corpus_path,
            out,
            redis_url,
            prefix,
            tmp_path / "workers.log",
            submit_args=("--shard-pairs", "18"),
        )
    submitted, run_id, redis_contents = run.submitted, run.run_id, run.redis

    assert_scored_once_with_the_apis_score(corpus, out)

    # The provider's limit held across both worker processes; 24 requests at 12 a second.
    assert server.over_limit == 0 and server.busiest_window()[0] <= LIMIT
    assert server.statuses() == Counter({200: 24, 500: 1})

    # One ledger row per request attempt, agreeing with what the server received.
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    with ledger.session() as session:
        rows = session.query(Usage).where(Usage.run_id == run_id).all()
    request_rows = [row for row in rows if row.request_index > 0]
    attempt_rows = [row for row in rows if row.request_index == 0]
    assert Counter(row.outcome for row in request_rows) == {"ok": 24, "server_error": 1}
    assert sum(row.tokens for row in request_rows if row.outcome == "ok") == sum(
        r.tokens for r in server.scored()
    )
    assert sum(row.pairs for row in request_rows if row.outcome == "ok") == corpus.num_rows
    assert len(attempt_rows) == 4 and all(row.tokens == 0 and row.device == "api" for row in attempt_rows)
    api = ledger.api_usage_totals(run_id)
    assert api.cost_usd == pytest.approx(api.tokens * 10.0 / 1e6)
    assert "requests     25 (1 failed)" in submitted.stderr and "cost         $" in submitted.stderr

    # The key is nowhere: worker log (which carries the scrubbed echo), submit output, files, Redis.
    log = run.log
    assert "injected failure for Bearer [redacted]" in log
    key = API_KEY.encode()
    assert key not in log.encode() and key not in (submitted.stdout + submitted.stderr).encode()
    files = [path for path in [*data.rglob("*"), out] if path.is_file()]
    assert any(path.suffix == ".parquet" for path in files) and any(
        path.name == "ledger.db" for path in files
    )
    assert [path for path in files if key in path.read_bytes()] == []
    assert [value for value in redis_contents if key in value] == []
    assert any(b"ratelimit:openai-rerank:" in value for value in redis_contents)
    ledger.dispose()


@pytest.mark.parametrize(
    ("kind", "model"), [("dashscope", "gte-rerank-v2"), ("qianfan", "bce-reranker-base")]
)
def test_dashscope_and_qianfan_workers_score_a_corpus_end_to_end(
    kind: str, model: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = new_prefix()
    data = tmp_path / "data"
    shared = {"data_dir": str(data), "broker_url": redis_url, "redis_key_prefix": prefix, "heartbeat_s": "1"}
    field = kind.replace("-", "_")
    worker_env = clean_env(**shared, **{f"{field}_api_key": API_KEY}, api_backoff_max_s="0.05")
    corpus = corpora.long_corpus(n_queries=5, docs_per_query=70, seed=9)  # Qianfan: 64 documents a request
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    server = FakeRerankServer(kind, api_key=API_KEY)
    with running(server):
        worker_env[f"RERANK_{field.upper()}_BASE_URL"] = server.url
        run = score_with_api_workers(
            ["--api", kind, "--model", model],
            ModelSpec.parse(f"{kind}:{model}"),
            1,
            worker_env,
            clean_env(**shared),
            corpus_path,
            out,
            redis_url,
            prefix,
            tmp_path / "workers.log",
        )
    assert_scored_once_with_the_apis_score(corpus, out)
    requests = 5 * (2 if kind == "qianfan" else 1)
    assert server.statuses() == Counter({200: requests})
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    with ledger.session() as session:
        rows = session.query(Usage).where(Usage.run_id == run.run_id, Usage.request_index > 0).all()
    assert sorted(row.tokens for row in rows) == sorted(request.tokens for request in server.scored())
    ledger.dispose()
    key = API_KEY.encode()
    files = [path for path in [*data.rglob("*"), out] if path.is_file()]
    assert [path for path in files if key in path.read_bytes()] == []
    assert [value for value in run.redis if key in value] == []
    assert key not in run.log.encode()
