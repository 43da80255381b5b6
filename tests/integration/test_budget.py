"""A run's budget through real API workers against a priced loopback provider: spending stops at most one
request past --max-cost-usd, the run pauses (paused_budget), and --resume with a higher budget completes
it with every pair in the output once."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.model_spec import ModelSpec
from storage.ledger import Ledger, RunStatus, Usage
from testkit import corpora
from testkit.api_dialects import expected_score
from testkit.api_servers import FakeRerankServer, running
from testkit.fleet import clean_env, run_script, start_workers
from testkit.services import delete_prefixed, new_prefix
from tests.api_fixtures import API_KEY, write_prices

pytestmark = pytest.mark.timeout(300)
MODEL = "openai-rerank:bge-test"
BUDGET_USD = 0.004  # the prices say $10 per million tokens: a few of the run's 24 requests


def _envs(
    tmp_path: Path, redis_url: str, prefix: str, **worker_settings: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The API workers' environment (the key, the prices, small requests) and submit.py's."""
    shared = {
        "data_dir": str(tmp_path / "data"),
        "broker_url": redis_url,
        "redis_key_prefix": prefix,
        "heartbeat_s": "1",
    }
    prices = str(write_prices(tmp_path))
    worker_env = clean_env(
        **shared,
        openai_rerank_api_key=API_KEY,
        api_max_documents="3",
        api_backoff_max_s="0.05",
        prices_path=prices,
        **worker_settings,
    )
    return worker_env, clean_env(**shared, prices_path=prices)


def test_a_spent_budget_pauses_the_run_and_a_raised_one_completes_it(redis_url: str, tmp_path: Path) -> None:
    prefix = new_prefix()
    data = tmp_path / "data"
    worker_env, submit_env = _envs(tmp_path, redis_url, prefix)
    server = FakeRerankServer("openai-rerank", api_key=API_KEY)
    corpus = corpora.long_corpus(n_queries=12, docs_per_query=6, seed=5)  # 2 requests per query
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    args = ["--api", "openai-rerank", "--model", "bge-test", "--processes", "1", "--concurrency", "1"]
    try:
        with running(server):
            worker_env["RERANK_OPENAI_RERANK_BASE_URL"] = server.url
            fleet = start_workers(
                args, ModelSpec.parse(MODEL), 1, worker_env, redis_url, prefix, tmp_path / "w.log"
            )
            try:
                budget = ["--max-cost-usd", str(BUDGET_USD), "--shard-pairs", "12", "--timeout", "120"]
                first = run_script(
                    "submit.py", str(corpus_path), "--model", MODEL, *budget, "--wait", env=submit_env
                )
                assert first.returncode == 6, first.stderr + fleet.log()[-3000:]
                run_id = first.stdout.strip().splitlines()[-1]
                assert f"run {run_id} is paused: the run's budget ($0.0040) is spent" in first.stderr
                assert ledger.get_run(run_id).status == RunStatus.PAUSED_BUDGET  # type: ignore[union-attr]
                status = run_script("status.py", run_id, env=submit_env)
                assert status.returncode == 6 and "paused_budget" in status.stdout, status.stdout

                # Spending stopped at most one request past the budget.
                with ledger.session() as session:
                    requests = (
                        session.query(Usage).where(Usage.run_id == run_id, Usage.request_index > 0).all()
                    )
                spent = sum(row.cost_usd or 0.0 for row in requests)
                largest = max(row.cost_usd or 0.0 for row in requests)
                assert BUDGET_USD <= spent <= BUDGET_USD + largest, (spent, largest)
                assert ledger.spent(run_id)[0] == pytest.approx(spent)
                scored_before = len(server.scored())
                assert scored_before == len(requests) < 24

                raised = ["--max-cost-usd", "1", "--wait", "--out", str(out), "--timeout", "120"]
                second = run_script("submit.py", "--resume", run_id, *raised, env=submit_env)
                assert second.returncode == 0, second.stderr + fleet.log()[-3000:]
                assert f"run {run_id}: budget $0.0040 -> $1.0000" in second.stderr
            finally:
                fleet.stop()
        # Every pair once in the output, with the API's score.
        scores = pq.read_table(out)
        keys = list(zip(scores["query_id"].to_pylist(), scores["doc_id"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys)) == corpus.num_rows
        got = dict(zip(keys, scores["score"].to_pylist(), strict=True))
        for row in corpus.to_pylist():
            assert got[(row["query_id"], row["doc_id"])] == pytest.approx(
                expected_score(row["query"], row["text"]), abs=1e-6
            )
        # The provider scored the 24 requests, and again only those a paused attempt had made (billed).
        with ledger.session() as session:
            rows = session.query(Usage).where(Usage.run_id == run_id).all()
        paused_attempts = {
            (row.shard_id, row.attempt) for row in rows if row.request_index == 0 and row.outcome == "budget"
        }
        wasted = [
            row for row in rows if row.request_index > 0 and (row.shard_id, row.attempt) in paused_attempts
        ]
        assert paused_attempts and len(server.scored()) == 24 + len(wasted)
        assert ledger.usage_totals(run_id).pairs == corpus.num_rows
        assert ledger.get_run(run_id).status == RunStatus.COMPLETED  # type: ignore[union-attr]
    finally:
        ledger.dispose()
        delete_prefixed(redis_url, prefix)


def test_a_models_daily_limit_pauses_a_run_without_a_budget(redis_url: str, tmp_path: Path) -> None:
    prefix = new_prefix()
    data = tmp_path / "data"
    worker_env, submit_env = _envs(
        tmp_path, redis_url, prefix, daily_budgets_usd=json.dumps({MODEL: BUDGET_USD})
    )
    server = FakeRerankServer("openai-rerank", api_key=API_KEY)
    corpus_path = corpora.write(
        corpora.long_corpus(n_queries=12, docs_per_query=6, seed=5), tmp_path / "c.parquet"
    )
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    args = ["--api", "openai-rerank", "--model", "bge-test", "--processes", "1", "--concurrency", "1"]
    try:
        with running(server):
            worker_env["RERANK_OPENAI_RERANK_BASE_URL"] = server.url
            fleet = start_workers(
                args, ModelSpec.parse(MODEL), 1, worker_env, redis_url, prefix, tmp_path / "w.log"
            )
            try:
                run = run_script(
                    "submit.py", str(corpus_path), "--model", MODEL, "--wait", "--timeout", "120",
                    env=submit_env,
                )  # fmt: skip
            finally:
                fleet.stop()
        assert run.returncode == 6, run.stderr + fleet.log()[-3000:]
        assert f"is paused: the daily limit of {MODEL} ($0.0040 on " in run.stderr
        with ledger.session() as session:
            requests = session.query(Usage).where(Usage.request_index > 0).all()
        spent, _ = ledger.spent_on(requests[0].finished_at.date(), MODEL)
        assert BUDGET_USD <= spent <= BUDGET_USD + max(row.cost_usd or 0.0 for row in requests)
        run_id = run.stdout.strip().splitlines()[-1]
        no_budget = run_script("submit.py", "--resume", run_id, "--max-cost-usd", "1", env=submit_env)
        assert no_budget.returncode == 2 and "the run has no budget to raise" in no_budget.stderr
    finally:
        ledger.dispose()
        delete_prefixed(redis_url, prefix)
