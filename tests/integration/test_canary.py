"""The canary through real workers: a fixed set of pairs scored beside the corpus in every run, checked
against its previous run once a run finishes. A clean night (every corpus pair carried over by --reuse)
stays completed; a night whose workers truncate at a different maximum length is completed_with_drift.
scripts/metrics.py is scraped while that night waits for its workers and once it is done, and the
Grafana dashboard asks only for metrics it serves."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from storage.ledger import Ledger, RunStatus
from testkit import corpora
from testkit.fleet import REPO, clean_env, local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, free_port, new_prefix

pytestmark = pytest.mark.timeout(600)


Samples = dict[str, dict[str, float]]  # metric -> run id (and ":status") -> value


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[int]:
    """scripts/metrics.py on the test's ledger: the runs as Prometheus metrics, on a free port."""
    port = free_port()
    env = clean_env(data_dir=str(tmp_path / "data"), metrics_port=str(port))
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "metrics.py")], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and "serving run metrics at" in process.stdout.readline()
        yield port
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def _scrape(port: int) -> tuple[Samples, set[str], str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("bulk_rerank_run_"):
                status = f":{sample.labels['status']}" if "status" in sample.labels else ""
                samples.setdefault(sample.name, {})[sample.labels["run_id"] + status] = sample.value
    return samples, set(samples), text


def _night_resumed(env: dict[str, str], run_id: str) -> tuple[int, str, str]:
    result = run_script("submit.py", "--resume", run_id, "--wait", "--timeout", "240", env=env)
    return result.returncode, run_id, result.stderr


def _night(env: dict[str, str], corpus: Path, model: str, *extra: str) -> tuple[int, str, str]:
    result = run_script(
        "submit.py", str(corpus), "--model", model, "--wait", "--timeout", "240", *extra, env=env
    )
    return (
        result.returncode,
        result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "",
        result.stderr,
    )


def test_a_changed_max_length_marks_the_run_and_a_clean_night_does_not(
    redis_url: str, tmp_path: Path, exporter: int
) -> None:
    model_dir = build_tiny_cross_encoder(tmp_path / "tiny-ce", seed=5)
    model = f"cross-encoder:{model_dir}"
    corpus_table = corpora.long_corpus(n_queries=30, docs_per_query=8, seed=31, integer_ids=False)
    corpus = corpora.write(corpus_table, tmp_path / "corpus.parquet")
    # The canary reuses the corpus's ids on other texts: none of it may leak into the corpus's output.
    canary = corpora.write(
        corpora.long_corpus(n_queries=6, docs_per_query=5, seed=77, integer_ids=False),
        tmp_path / "canary.parquet",
    )
    prefix = new_prefix()
    usual = local_worker_env(tmp_path, redis_url, prefix)
    shorter = local_worker_env(tmp_path, redis_url, prefix, max_length="32")
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    try:
        fleet = start_fleet(model, 1, usual, redis_url, prefix, tmp_path / "workers.log")
        try:
            out = tmp_path / "night1.parquet"
            code, first, log = _night(usual, corpus, model, "--canary", str(canary), "--out", str(out))
            assert code == 0, log + fleet.log()[-3000:]
            assert "canary: 30 pairs from" in log and "first run with this canary" in log
            assert pq.read_table(out).num_rows == 240  # the corpus alone
            assert pq.read_table(tmp_path / "data" / "runs" / first).num_rows == 240

            code, second, log = _night(usual, corpus, model, "--canary", str(canary), "--reuse", "latest")
            assert code == 0, log
            assert f"reusing 240 scores from run {first}; 0 pairs to score" in log
            assert re.search(rf"canary\s+30 pairs: clean against run {first}", log), log
        finally:
            fleet.stop()

        # Night 3 waits for its workers (truncating at 32 tokens); the run metrics show it queued.
        submitted = run_script(
            "submit.py", str(corpus), "--model", model, "--canary", str(canary), env=shorter
        )
        assert submitted.returncode == 0, submitted.stderr
        third = submitted.stdout.strip().splitlines()[-1]
        waiting, _, _ = _scrape(exporter)
        assert waiting["bulk_rerank_run_pairs_total"][third] == 270  # the corpus and the canary
        assert waiting["bulk_rerank_run_pairs_done"][third] == 0
        assert waiting["bulk_rerank_run_finished"][third] == 0
        assert math.isnan(waiting["bulk_rerank_run_eta_seconds"][third])
        assert waiting["bulk_rerank_run_status"][f"{third}:queued"] == 1
        assert (
            waiting["bulk_rerank_run_drift"][second] == 0 and waiting["bulk_rerank_run_finished"][second] == 1
        )

        fleet = start_fleet(model, 1, shorter, redis_url, prefix, tmp_path / "workers-32.log")
        try:
            code, _, log = _night_resumed(shorter, third)
        finally:
            fleet.stop()
        assert code == 5, log
        assert f"the canary drifted (DRIFT against run {second}: " in log
        assert re.search(r"max_abs_diff = [\d.]+ \(max_abs_diff>0.01\)", log), log

        done, served, text = _scrape(exporter)
        assert (
            done["bulk_rerank_run_pairs_done"][third] == 270 and done["bulk_rerank_run_finished"][third] == 1
        )
        assert done["bulk_rerank_run_shards_done"][third] == done["bulk_rerank_run_shards_total"][third] == 2
        assert (
            done["bulk_rerank_run_shards_failed"][third] == 0
            and done["bulk_rerank_run_eta_seconds"][third] == 0
        )
        assert done["bulk_rerank_run_pairs_per_second"][third] > 0
        assert done["bulk_rerank_run_cost_usd"][third] == 0  # local CPU scoring has no price
        assert 0.1 < done["bulk_rerank_run_truncated_share"][third] < 1  # cut at 32 tokens
        assert done["bulk_rerank_run_drift"][third] == 1
        assert done["bulk_rerank_run_status"][f"{third}:completed_with_drift"] == 1
        assert f'model="{model}"' in text and 'role="production"' in text
        dashboard = json.loads((REPO / "examples" / "grafana-dashboard.json").read_text())
        asked = {
            name
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"bulk_rerank_run_\w+", target["expr"])
        }
        assert asked and asked <= served, asked - served

        status = run_script("status.py", third, env=shorter)
        assert status.returncode == 5 and "completed_with_drift" in status.stdout, status.stdout
        assert run_script("status.py", second, env=usual).returncode == 0
        runs = {run_id: ledger.get_run(run_id) for run_id in (first, second, third)}
        assert [run.status for run in runs.values() if run] == [
            RunStatus.COMPLETED,
            RunStatus.COMPLETED,
            RunStatus.COMPLETED_WITH_DRIFT,
        ]
        verdict = runs[third].options["canary"]["verdict"]  # type: ignore[union-attr]
        assert verdict["baseline"] == second and verdict["metrics"]["pairs_common"] == 30
    finally:
        ledger.dispose()
        delete_prefixed(redis_url, prefix)
