"""Nothing lost, nothing counted twice: worker loss, poison shards and storage faults, with real worker
processes, real Redis and the ledger."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import torch
from transformers import BertForSequenceClassification

from storage.ledger import Ledger
from testkit import corpora
from testkit.checks import assert_usage_counted_once
from testkit.fleet import Fleet, local_worker_env, run_script, start_fleet, wait_finished
from testkit.model_factory import bert_tokenizer, build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix

POISON_WORD = "xylophone"


def _freeze_two_running_shards(
    ledger: Ledger, fleet: Fleet, run_id: str, timeout_s: float = 60
) -> list[tuple[int, str, psutil.Process]]:
    """Two shards running on two different workers at once, with both workers stopped (SIGSTOP) while
    the ledger still says so: (shard id, worker, its process) for each. Shards of the tiny model take
    about a second, so the test acts on frozen workers rather than racing them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = {shard.worker: shard.shard_id for shard in ledger.shards(run_id, statuses=["running"])}
        held = [(shard_id, worker) for worker, shard_id in running.items() if worker][:2]
        if len(held) < 2:
            time.sleep(0.05)
            continue
        frozen = [(shard_id, worker, fleet.worker_process(worker)) for shard_id, worker in held]
        for _, _, process in frozen:
            process.suspend()
        still = {shard.worker: shard.shard_id for shard in ledger.shards(run_id, statuses=["running"])}
        if all(still.get(worker) == shard_id for shard_id, worker, _ in frozen):
            return frozen
        for _, _, process in frozen:  # one of them finished just then: let both go and look again
            process.resume()
    raise AssertionError("never saw two shards running on two workers at once")


def _assert_exactly_once(run_dir: Path, corpus_rows: int, ledger: Ledger, run_id: str) -> None:
    scores = pq.read_table(run_dir)
    keys = list(zip(scores.column("query_id").to_pylist(), scores.column("doc_id").to_pylist(), strict=True))
    assert len(keys) == corpus_rows and len(set(keys)) == corpus_rows
    assert not [p for p in run_dir.rglob("*.tmp")], "a partial file was left behind"
    assert not list(run_dir.glob("_attempts/*")), "attempt files were left behind"
    assert_usage_counted_once(ledger, run_id)


def test_worker_loss_sigterm_finishes_and_sigkill_is_redelivered(redis_url: str, tmp_path: Path) -> None:
    model = build_tiny_cross_encoder(tmp_path / "model", seed=5)
    prefix = new_prefix()
    # A worker killed between taking a shard's message and leasing it (it holds RERANK_SHARDS_IN_FLIGHT
    # messages) leaves that shard queued with no lease to expire: it is sent again after stranded_s.
    env = local_worker_env(tmp_path, redis_url, prefix, lease_s="3", stranded_s="5")
    corpus = corpora.long_corpus(n_queries=400, docs_per_query=40, seed=12)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    fleet = start_fleet(f"cross-encoder:{model}", 3, env, redis_url, prefix, tmp_path / "workers.log")
    try:
        submitted = run_script(
            "submit.py",
            str(corpus_path),
            "--model",
            f"cross-encoder:{model}",
            "--shard-pairs",
            "2000",
            env=env,
        )
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")

        (termed_shard, termed_worker, termed), (killed_shard, killed_worker, killed) = (
            _freeze_two_running_shards(ledger, fleet, run_id)
        )
        # SIGKILL: the shard comes back through the reaper once the lease expires.
        killed.kill()
        # Warm shutdown: the worker finishes the shard it holds, then exits.
        termed.send_signal(signal.SIGTERM)
        termed.resume()
        termed.wait(60)  # the launcher reaps it and, as it exited cleanly, does not restart it

        wait_finished(ledger, run_id)
        progress = ledger.progress(run_id)
        assert (progress.status, progress.pairs_done) == ("completed", corpus.num_rows)
        shards = {shard.shard_id: shard for shard in ledger.shards(run_id)}
        assert shards[termed_shard].worker == termed_worker and shards[termed_shard].attempts == 1
        assert shards[killed_shard].attempts >= 2
        log = fleet.log()
        assert "stopped renewing its lease; sent again" in log
        assert f"{killed_worker} exited with -9; restarting it" in log
        assert f"{termed_worker} exited" not in log
        assert fleet.worker_process(killed_worker).pid != killed.pid
        _assert_exactly_once(tmp_path / "data" / "runs" / run_id, corpus.num_rows, ledger, run_id)
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)


def _poison_model(path: Path, poisoned: bool) -> Path:
    """A tiny cross-encoder whose embedding of POISON_WORD overflows to NaN when ``poisoned``."""
    build_tiny_cross_encoder(path, seed=7)
    if poisoned:
        model = BertForSequenceClassification.from_pretrained(path)
        token_ids = bert_tokenizer()(POISON_WORD, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            model.bert.embeddings.word_embeddings.weight[token_ids] = float("inf")
        model.save_pretrained(path)
    return path


def test_poison_shard_fails_alone_and_retry_failed_completes_after_the_fix(
    redis_url: str, tmp_path: Path
) -> None:
    model = _poison_model(tmp_path / "model", poisoned=True)
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix, max_attempts="2")
    table = corpora.long_corpus(n_queries=30, docs_per_query=10, seed=13, integer_ids=False, shuffle=False)
    texts = table.column("text").to_pylist()
    texts[123] = f"a document about a {POISON_WORD} and its sound"
    table = table.set_column(3, "text", [texts])
    corpus_path = corpora.write(table, tmp_path / "corpus.parquet")
    spec = f"cross-encoder:{model}"
    fleet = start_fleet(spec, 1, env, redis_url, prefix, tmp_path / "workers.log")
    try:
        first = run_script(
            "submit.py",
            str(corpus_path),
            "--model",
            spec,
            "--wait",
            "--shard-pairs",
            "50",
            "--timeout",
            "120",
            env=env,
        )
        assert first.returncode == 1, first.stderr
        assert "finished with 1 failed shard(s)" in first.stderr and "--retry-failed" in first.stderr
        run_id = first.stdout.strip()
        status = run_script("status.py", run_id, env=env)
        assert status.returncode == 1
        assert "failed shard 2 (2 attempts): NonFiniteScoresError" in status.stdout
        assert "5 done, 1 failed, 6 total" in status.stdout
    finally:
        fleet.stop()

    _poison_model(model, poisoned=False)  # the fix: repaired weights, workers restarted
    fleet = start_fleet(spec, 1, env, redis_url, prefix, tmp_path / "workers-fixed.log")
    try:
        out = tmp_path / "scores.parquet"
        retried = run_script(
            "submit.py", "--retry-failed", run_id, "--wait", "--out", str(out), "--timeout", "120", env=env
        )
        assert retried.returncode == 0, retried.stderr
        assert "re-enqueued 1 shard(s)" in retried.stderr
        assert pq.read_table(out).num_rows == 300
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    usage = ledger.usage_totals(run_id)
    assert usage.failed_attempts == 2 and ledger.progress(run_id).status == "completed"


def test_unwritable_output_fails_the_attempt_cleanly_and_retries(redis_url: str, tmp_path: Path) -> None:
    model = build_tiny_cross_encoder(tmp_path / "model", seed=8)
    prefix = new_prefix()
    env = local_worker_env(tmp_path, redis_url, prefix, max_attempts="6")
    spec = f"cross-encoder:{model}"
    corpus_path = corpora.write(corpora.long_corpus(10, 5, seed=14), tmp_path / "corpus.parquet")
    submitted = run_script("submit.py", str(corpus_path), "--model", spec, env=env)
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    run_dir = tmp_path / "data" / "runs" / run_id
    blocker = run_dir / "_attempts"
    blocker.write_bytes(b"")  # a file where attempts write their scores: no attempt can write
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    fleet = start_fleet(spec, 1, env, redis_url, prefix, tmp_path / "workers.log")
    try:
        deadline = time.monotonic() + 60
        while ledger.usage_totals(run_id).failed_attempts < 1:
            assert time.monotonic() < deadline, fleet.log()[-2000:]
            time.sleep(0.1)
        assert sorted(p.name for p in run_dir.iterdir()) == ["_attempts", "_inputs"]
        [shard] = ledger.shards(run_id)
        assert "_attempts" in (shard.error or ""), shard.error
        blocker.unlink()
        wait_finished(ledger, run_id, timeout_s=120)
        assert ledger.progress(run_id).status == "completed"
        _assert_exactly_once(run_dir, 50, ledger, run_id)
    finally:
        fleet.stop()
        delete_prefixed(redis_url, prefix)


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> None:
    yield
