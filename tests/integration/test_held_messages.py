"""A shard message a worker had taken but not started (a retry's delayed message, or one prefetched) is
sent again soon after that worker dies: within a reaper pass of its presence lapsing, not after
``stranded_s``. Real Redis, a real ledger, and real worker processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from core.broker.celery_app import create_app
from core.broker.held_messages import DeadWorkersMessages, HeldMessages, held_key
from core.broker.presence import presence_key
from core.broker.url import connect
from core.settings import Settings
from storage.ledger import Ledger, utcnow
from storage.ledger.types import AttemptUsage
from testkit import corpora
from testkit.checks import record_run
from testkit.fleet import local_worker_env, run_script, start_fleet, wait_finished
from testkit.model_factory import build_tiny_cross_encoder
from testkit.services import delete_prefixed, new_prefix
from worker.reaper import resend_orphaned_shards


def test_the_reaper_sends_again_only_queued_shards_of_dead_workers(
    fresh_ledger_url: str, redis_url: str, redis_prefix: str
) -> None:
    ledger = Ledger(fresh_ledger_url)
    ledger.create_schema()
    leases = ledger.leases(max_attempts=3, lease_s=60)
    run_id = record_run(ledger, 4)
    run = ledger.get_run(run_id)
    assert run is not None
    client = connect(redis_url)
    queue_key = f"{redis_prefix}{run.queue}"
    dead = HeldMessages(client, redis_prefix, run.queue, "dead@host", interval_s=60)
    live = HeldMessages(client, redis_prefix, run.queue, "live@host", interval_s=60)
    client.set(presence_key(redis_prefix, run.queue, "live@host"), "{}", ex=60)
    for shard_id in (0, 1):
        dead.took(run_id, shard_id)
    dead.took(run_id, 2)
    dead.took(run_id, 2)
    dead.finished(run_id, 2)  # a retry's message arrived before its predecessor finished: one held
    live.took(run_id, 3)
    dead.publish()
    live.publish()
    leases.acquire(run_id, 1, "another@host")  # shard 1 is being scored elsewhere: its lease covers it
    app = create_app(Settings(redis_key_prefix=redis_prefix), redis_url)
    dead_workers = DeadWorkersMessages(client, redis_prefix)

    assert resend_orphaned_shards(leases, ledger, app, dead_workers) == 2  # shards 0 and 2
    assert client.llen(queue_key) == 2
    assert not client.exists(held_key(redis_prefix, run.queue, "dead@host"))  # dealt with
    assert client.hget(held_key(redis_prefix, run.queue, "live@host"), f"{run_id}/3") == b"1"
    assert resend_orphaned_shards(leases, ledger, app, dead_workers) == 0  # once

    live.finished(run_id, 3)
    live.publish()
    assert not client.exists(held_key(redis_prefix, run.queue, "live@host"))
    # A worker restarted under the same name finds its predecessor's counts and hands them over.
    live.took(run_id, 3)
    live.publish()
    successor = HeldMessages(client, redis_prefix, run.queue, "live@host", interval_s=60)
    successor.start()
    successor.stop()  # a clean stop leaves nothing under its key
    assert not client.exists(held_key(redis_prefix, run.queue, "live@host"))
    assert resend_orphaned_shards(leases, ledger, app, dead_workers) == 1
    assert client.llen(queue_key) == 3
    delete_prefixed(redis_url, redis_prefix)
    client.close()


def test_a_running_workers_counts_reach_redis_at_once_and_come_back_after_redis_loses_them(
    redis_url: str, redis_prefix: str
) -> None:
    client = connect(redis_url)
    held = HeldMessages(client, redis_prefix, "rerank.q", "w@host", interval_s=0.3)
    key = held_key(redis_prefix, "rerank.q", "w@host")
    held.start()
    held.took("run", 7)
    _wait_until(lambda: client.hget(key, "run/7") == b"1", "the count never reached Redis", timeout_s=5)
    client.delete(key)  # as a Redis restarted empty would
    _wait_until(lambda: client.hget(key, "run/7") == b"1", "the count never came back", timeout_s=5)
    held.finished("run", 7)
    _wait_until(lambda: not client.exists(key), "a finished message stayed counted", timeout_s=5)
    held.took("run", 8)
    held.stop()
    assert not client.exists(key)
    delete_prefixed(redis_url, redis_prefix)
    client.close()


@pytest.mark.timeout(240)
def test_a_retry_held_by_a_killed_worker_is_sent_again_long_before_stranded_s(
    redis_url: str, tmp_path: Path
) -> None:
    model = build_tiny_cross_encoder(tmp_path / "model", seed=3)
    spec = f"cross-encoder:{model}"
    prefix = new_prefix()
    # stranded_s stays at its default (300 s): only the held-message count can bring the shard back in time.
    env = local_worker_env(tmp_path, redis_url, prefix, lease_s="4")
    corpus = corpora.long_corpus(n_queries=4, docs_per_query=5, seed=4)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    submitted = run_script("submit.py", str(corpus_path), "--model", spec, env=env)  # no worker yet
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    ledger = Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    assert [shard.shard_id for shard in ledger.shards(run_id)] == [0]
    # Another attempt holds the shard for ten minutes: the worker that takes the message is told to come
    # back then, and keeps the retry's delayed message meanwhile.
    ghost = ledger.leases(max_attempts=3, lease_s=600)
    started_at = utcnow()
    ghost.acquire(run_id, 0, "ghost@host")
    fleet = start_fleet(spec, 2, env, redis_url, prefix, tmp_path / "workers.log")
    client = connect(redis_url)
    try:
        # Told to come back (Celery logs the retry once the first message is done with), the worker
        # holds only the delayed message: the other attempt can give up without the first one leasing.
        _wait_until(lambda: "retry: Retry in" in fleet.log(), "the busy shard was never retried")
        holder = _wait_for_holder(client, prefix, run_id)
        # The other attempt gives up; the shard is queued and its one message sits in the holder.
        usage = AttemptUsage(worker="ghost@host", model=spec, device="cpu")
        ghost.fail(run_id, 0, 1, usage, started_at, "gave up", final=False)
        killed_at = time.monotonic()
        fleet.worker_process(holder).kill()
        wait_finished(ledger, run_id, timeout_s=120)
        assert time.monotonic() - killed_at < 120
        progress = ledger.progress(run_id)
        assert (progress.status, progress.pairs_done) == ("completed", 20)
        log = fleet.log()
        assert "its message was held by a worker that is gone" in log
        assert "Signal handler" not in log  # Celery's words for a receiver that raised
    finally:
        fleet.stop()
        client.close()
        delete_prefixed(redis_url, prefix)


def _wait_until(condition: Callable[[], bool], failure: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def _wait_for_holder(client: redis.Redis, prefix: str, run_id: str) -> str:
    """The hostname of the worker whose held-messages hash counts the run's shard 0."""
    holders: list[str] = []

    def found() -> bool:
        holders.extend(
            key.decode().rsplit(":", 1)[-1]
            for key in client.scan_iter(match=f"{prefix}held:*")
            if client.hget(key, f"{run_id}/0")
        )
        return bool(holders)

    _wait_until(found, "no worker ever held the shard's message")
    return holders[0]
