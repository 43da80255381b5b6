"""A two-stage cascade over 20,000 pairs through real workers of two models: stage 2 scores exactly each
query's top k by stage 1, each pair once, although one of its workers is killed mid-shard; the output
holds every pair with both stages' scores and the final ranks; usage is attributed per stage."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage.ledger import Ledger
from testkit import corpora
from testkit.checks import assert_usage_counted_once, reference_scores
from testkit.fleet import SCRIPTS, local_worker_env, run_script, start_fleet, wait_finished
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

pytestmark = pytest.mark.timeout(900)
TOP_K = 5


def test_two_stage_cascade_scores_each_querys_top_k_once(redis_url: str, tmp_path: Path) -> None:
    first_dir = build_tiny_cross_encoder(tmp_path / "cheap", seed=1)
    # Wider, so that a stage-2 shard runs long enough to be caught and killed.
    second_dir = build_tiny_cross_encoder(tmp_path / "costly", seed=2, hidden_size=128, layers=2)
    first, second = f"cross-encoder:{first_dir}", f"cross-encoder:{second_dir}"
    corpus = corpora.long_corpus(n_queries=1000, docs_per_query=20, seed=3, integer_ids=False)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    prefix = new_prefix()
    # A worker killed between taking a shard's message and leasing it (it holds RERANK_SHARDS_IN_FLIGHT
    # messages) leaves that shard queued with no lease to expire: it is sent again after stranded_s.
    env = local_worker_env(tmp_path, redis_url, prefix, lease_s="3", stranded_s="5")
    with ThreadPoolExecutor(2) as pool:  # both fleets load their models at once
        starting = {
            name: pool.submit(start_fleet, model, 1, env, redis_url, prefix, tmp_path / f"workers-{name}.log")
            for name, model in (("first", first), ("second", second))
        }
        fleets = {name: future.result() for name, future in starting.items()}
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    try:
        submitted = run_script(
            "submit.py",
            str(corpus_path),
            "--model",
            first,
            "--then",
            second,
            "--top-k",
            str(TOP_K),
            "--shard-pairs",
            "2000",
            env=env,
        )
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip().splitlines()[-1]
        wait_finished(ledger, run_id, timeout_s=300)
        assert ledger.stage_runs(run_id) == []  # stage 2 starts when a producer follows the cascade

        out = tmp_path / "cascade.parquet"
        follow = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "submit.py"), "--resume", run_id, "--wait", "--out", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stage2, killed_shard = _kill_a_stage_2_worker_mid_shard(ledger, run_id, fleets["second"])
        _, stderr = follow.communicate(timeout=600)
        assert follow.returncode == 0, stderr + fleets["second"].log()[-3000:]
        assert f"stage 2: run {stage2} scores the top {TOP_K} pairs of each query (5,000 pairs)" in stderr

        # Stage 2 scored exactly each query's top 5 by stage 1, each pair once, the killed shard again.
        [stage_run] = ledger.stage_runs(run_id)
        assert (stage_run.run_id, stage_run.stage, stage_run.status) == (stage2, 2, "completed")
        [killed] = [shard for shard in ledger.shards(stage2) if shard.shard_id == killed_shard]
        assert killed.attempts >= 2
        assert ledger.usage_totals(stage2).pairs == 1000 * TOP_K
        assert_usage_counted_once(ledger, stage2)
        stage2_scores = pq.read_table(tmp_path / "data" / "runs" / run_id / "_stages" / stage2)
        keys = list(
            zip(stage2_scores["query_id"].to_pylist(), stage2_scores["doc_id"].to_pylist(), strict=True)
        )
        assert len(keys) == len(set(keys)) == 1000 * TOP_K

        # The output: every pair, both stages' scores, the final ranks.
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == corpus.num_rows
        sample = corpus.take(list(range(0, corpus.num_rows, 20)))  # stage 1's scores are checked elsewhere
        expected_first = dict(zip(_keys(sample), reference_scores(first_dir, sample).tolist(), strict=True))
        queries: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            queries[row["query_id"]].append(row)
        survivors = [row for group in queries.values() for row in _top(group, "score_stage1", TOP_K)]
        assert {(r["query_id"], r["doc_id"]) for r in survivors} == set(keys)
        for row in rows:
            key = (row["query_id"], row["doc_id"])
            if key in expected_first:
                assert row["score_stage1"] == pytest.approx(expected_first[key], abs=1e-4)
            assert (row["score_stage2"] is not None) == (row["stage"] == 2)
        survivor_keys = {(r["query_id"], r["doc_id"]) for r in survivors}
        survivor_table = corpus.take([i for i, key in enumerate(_keys(corpus)) if key in survivor_keys])
        expected_second = dict(
            zip(_keys(survivor_table), reference_scores(second_dir, survivor_table).tolist(), strict=True)
        )
        for group in queries.values():
            reached = [r for r in group if r["stage"] == 2]
            stopped = [r for r in group if r["stage"] == 1]
            for row in reached:
                # The wider model's float32 sums differ from the library's by a few 1e-4.
                assert row["score_stage2"] == pytest.approx(
                    expected_second[(row["query_id"], row["doc_id"])], abs=1e-3
                )
            order = sorted(reached, key=lambda r: -r["score_stage2"]) + sorted(
                stopped, key=lambda r: -r["score_stage1"]
            )
            assert [r["final_rank"] for r in order] == list(range(1, len(group) + 1))

        # Usage and cost per stage; status shows both stages.
        cost = run_script(
            "cost.py", "--run", run_id, "--by", "stage", "--by", "model", "--format", "csv", env=env
        )
        assert cost.returncode == 0, cost.stderr
        pairs = {(r["stage"], r["model"]): int(r["pairs"]) for r in csv.DictReader(io.StringIO(cost.stdout))}
        assert pairs == {("1", first): corpus.num_rows, ("2", second): 1000 * TOP_K}
        status = run_script("status.py", run_id, env=env)
        assert f"run {stage2}: {second}, top {TOP_K} a query (5,000 pairs), " in status.stdout
        assert np.isfinite([r["final_score"] for r in rows]).all()

        # The next night, --reuse latest: every stage carries its scores over and scores nothing again.
        again = run_script(
            "submit.py",
            *(str(corpus_path), "--model", first, "--then", second, "--top-k", str(TOP_K)),
            *("--reuse", "latest", "--wait", "--out", str(tmp_path / "night-2.parquet")),
            env=env,
        )
        assert again.returncode == 0, again.stderr
        second_night = again.stdout.strip().splitlines()[-1]
        [second_stage] = ledger.stage_runs(second_night)
        for run, pairs in ((ledger.get_run(second_night), corpus.num_rows), (second_stage, 1000 * TOP_K)):
            assert run is not None and run.options["reused_pairs"] == pairs
            assert ledger.usage_totals(run.run_id).pairs == 0
        night_2 = pq.read_table(tmp_path / "night-2.parquet").to_pylist()
        assert sorted(night_2, key=_row_key) == sorted(rows, key=_row_key)
    finally:
        for fleet in fleets.values():
            fleet.stop()
        ledger.dispose()
        delete_prefixed(redis_url, prefix)


def _kill_a_stage_2_worker_mid_shard(ledger: Ledger, run_id: str, fleet) -> tuple[str, int]:
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "never saw a stage-2 shard running"
        stages = ledger.stage_runs(run_id)
        running = (
            [s for s in ledger.shards(stages[0].run_id, statuses=["running"]) if s.worker] if stages else []
        )
        if not running:
            time.sleep(0.02)
            continue
        victim = fleet.worker_process(running[0].worker)
        victim.suspend()
        [still] = [s for s in ledger.shards(stages[0].run_id) if s.shard_id == running[0].shard_id]
        if still.status == "running" and still.worker == running[0].worker:
            victim.kill()
            return stages[0].run_id, running[0].shard_id
        victim.resume()


def _row_key(row: dict) -> tuple[str, str]:
    return row["query_id"], row["doc_id"]


def _keys(table) -> list[tuple[str, str]]:
    return list(zip(table["query_id"].to_pylist(), table["doc_id"].to_pylist(), strict=True))


def _top(group: list[dict], column: str, k: int) -> list[dict]:
    """The k best by ``column``, ties in output order (the input order of the run's shard)."""
    return sorted(group, key=lambda r: -r[column])[:k]
