"""The canary through real workers: a fixed set of pairs scored beside the corpus in every run, checked
against its previous run once a run finishes. A clean night (every corpus pair carried over by --reuse)
stays completed; a night whose workers truncate at a different maximum length is completed_with_drift."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.ledger import Ledger, RunStatus
from testkit import corpora
from testkit.fleet import local_worker_env, run_script, start_fleet
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

pytestmark = pytest.mark.timeout(600)


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
    redis_url: str, tmp_path: Path
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

        fleet = start_fleet(model, 1, shorter, redis_url, prefix, tmp_path / "workers-32.log")
        try:
            code, third, log = _night(shorter, corpus, model, "--canary", str(canary))
        finally:
            fleet.stop()
        assert code == 5, log
        assert f"the canary drifted (DRIFT against run {second}: " in log
        assert re.search(r"max_abs_diff = [\d.]+ \(max_abs_diff>0.01\)", log), log

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
