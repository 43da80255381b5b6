from __future__ import annotations

import multiprocessing
import secrets
import time
from collections.abc import Iterator

import pytest

from storage.ledger import AttemptUsage, Busy, Closed, Granted, Ledger, Run, ShardLeases, ShardPlanRow, utcnow


def _new_run(ledger: Ledger, shards: int = 3, pairs_per_shard: int = 10) -> str:
    run_id = f"test-{secrets.token_hex(4)}"
    run = Run(
        run_id=run_id,
        model="cross-encoder:m",
        queue="rerank.q",
        corpus_path="/c.parquet",
        status="queued",
        n_shards=shards,
        n_pairs=shards * pairs_per_shard,
        n_queries=shards,
        options={},
        created_at=utcnow(),
    )
    rows = [ShardPlanRow(i, pairs_per_shard, 1, f"in/{i}", f"out/{i}") for i in range(shards)]
    ledger.create_run(run, rows)
    ledger.mark_enqueued(run_id, range(shards))
    return run_id


def _usage(pairs: int = 10) -> AttemptUsage:
    return AttemptUsage(worker="w1", model="cross-encoder:m", device="cpu", pairs=pairs, tokens=pairs * 7)


def _granted(grant: object) -> int:
    assert isinstance(grant, Granted), grant
    return grant.attempt


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    yield ledger
    ledger.dispose()


@pytest.fixture
def leases(ledger: Ledger) -> ShardLeases:
    return ledger.leases(max_attempts=3, lease_s=60)


def _key(shard_id: int, attempt: int) -> str:
    return f"runs/r/_attempts/shard-{shard_id:05d}.attempt-{attempt}.parquet"


def test_run_completes_when_every_shard_is_published(ledger: Ledger, leases: ShardLeases) -> None:
    run_id = _new_run(ledger)
    for shard_id in range(3):
        attempt = _granted(leases.acquire(run_id, shard_id, "w1"))
        assert attempt == 1
        assert leases.publish(run_id, shard_id, attempt, _usage(), utcnow(), _key(shard_id, attempt))
    assert [shard.scores_path for shard in ledger.shards(run_id)] == [_key(i, 1) for i in range(3)]
    progress = ledger.progress(run_id)
    assert (progress.shards_done, progress.pairs_done, progress.status) == (3, 30, "completed")
    totals = ledger.usage_totals(run_id)
    assert (totals.attempts, totals.pairs, totals.tokens) == (3, 30, 210)


def test_done_shard_is_closed(ledger: Ledger, leases: ShardLeases) -> None:
    run_id = _new_run(ledger, shards=1)
    attempt = _granted(leases.acquire(run_id, 0, "w1"))
    leases.publish(run_id, 0, attempt, _usage(), utcnow(), _key(0, attempt))
    assert leases.acquire(run_id, 0, "w2") == Closed("done")
    assert ledger.mark_enqueued(run_id, [0]) == []


def test_duplicate_delivery_waits_for_the_live_lease(ledger: Ledger, leases: ShardLeases) -> None:
    run_id = _new_run(ledger, shards=1)
    _granted(leases.acquire(run_id, 0, "w1"))
    busy = leases.acquire(run_id, 0, "w2")
    assert isinstance(busy, Busy) and 55 < busy.retry_in_s <= 61
    assert ledger.mark_enqueued(run_id, [0]) == []  # a resume does not resend a held shard


def test_stale_attempt_cannot_publish_and_its_usage_counts_once(ledger: Ledger) -> None:
    short = ledger.leases(max_attempts=3, lease_s=1)
    run_id = _new_run(ledger, shards=1)
    first = _granted(short.acquire(run_id, 0, "w1"))
    time.sleep(1.2)  # w1 stops renewing: its lease expires
    second = _granted(short.acquire(run_id, 0, "w2"))
    assert (first, second) == (1, 2)
    assert not short.renew(run_id, 0, first)
    assert not short.publish(run_id, 0, first, _usage(), utcnow(), _key(0, first))
    assert not short.publish(run_id, 0, first, _usage(), utcnow(), _key(0, first))
    assert short.publish(run_id, 0, second, _usage(), utcnow(), _key(0, second))
    assert not short.publish(run_id, 0, second, _usage(), utcnow(), _key(0, 99))
    [shard] = ledger.shards(run_id)
    assert shard.scores_path == _key(0, second)  # the fresh attempt's file, chosen once
    assert ledger.usage_totals(run_id).attempts == 2


def test_moving_the_scores_to_their_copy_happens_once(ledger: Ledger, leases: ShardLeases) -> None:
    run_id = _new_run(ledger, shards=1)
    attempt = _granted(leases.acquire(run_id, 0, "w1"))
    assert leases.publish(run_id, 0, attempt, _usage(), utcnow(), _key(0, attempt))
    [shard] = ledger.shards(run_id)
    assert not ledger.moved_scores(run_id, 0, _key(0, 7), shard.output_path)  # not the chosen file
    assert ledger.moved_scores(run_id, 0, _key(0, attempt), shard.output_path)
    assert not ledger.moved_scores(run_id, 0, _key(0, attempt), shard.output_path)
    [shard] = ledger.shards(run_id)
    assert shard.scores_path == shard.output_path == shard.published_scores


def test_failures_are_recorded_and_the_run_ends_with_failures(ledger: Ledger, leases: ShardLeases) -> None:
    run_id = _new_run(ledger, shards=2)
    for shard_id in range(2):
        attempt = _granted(leases.acquire(run_id, shard_id, "w1"))
        if shard_id == 0:
            leases.publish(run_id, shard_id, attempt, _usage(), utcnow(), _key(shard_id, attempt))
        else:
            leases.fail(run_id, shard_id, attempt, _usage(0), utcnow(), "ValueError: boom", final=True)
    progress = ledger.progress(run_id)
    assert progress.status == "completed_with_failures"
    assert progress.finished and progress.shards_failed == 1
    [failed] = ledger.shards(run_id, statuses=["failed"])
    assert failed.error == "ValueError: boom"
    assert ledger.usage_totals(run_id).failed_attempts == 1
    # --retry-failed: the failed shard gets fresh tries
    assert ledger.mark_enqueued(run_id, [0, 1]) == [1]
    grant = leases.acquire(run_id, 1, "w1")
    assert isinstance(grant, Granted) and grant.attempt == 2 and not grant.final_try


def test_retries_are_bounded(ledger: Ledger, leases: ShardLeases) -> None:
    run_id = _new_run(ledger, shards=1)
    for expected in (1, 2, 3):
        grant = leases.acquire(run_id, 0, "w1")
        assert isinstance(grant, Granted) and grant.attempt == expected
        assert grant.final_try == (expected == 3)
        leases.fail(run_id, 0, expected, _usage(0), utcnow(), "OSError: disk", final=grant.final_try)
    assert leases.acquire(run_id, 0, "w1") == Closed("failed")


def test_expired_leases_are_requeued_once_and_exhausted_shards_fail(ledger: Ledger) -> None:
    short = ledger.leases(max_attempts=2, lease_s=1)
    run_id = _new_run(ledger, shards=1)
    for attempt in (1, 2):
        assert _granted(short.acquire(run_id, 0, f"w{attempt}")) == attempt
        time.sleep(1.2)  # the worker died
        expired = [s for s in short.expired() if s.run_id == run_id]
        assert [(s.shard_id, s.attempts) for s in expired] == [(0, attempt)]
        assert short.requeue_expired(run_id, 0, attempt)
        assert not short.requeue_expired(run_id, 0, attempt)  # a second reaper loses the race
    assert short.acquire(run_id, 0, "w3") == Closed("failed")
    [shard] = ledger.shards(run_id)
    assert "gave up after 2 attempts" in (shard.error or "")


def _hammer(url: str, run_id: str, shard_ids: list[int]) -> None:
    ledger = Ledger(url)
    leases = ledger.leases(max_attempts=3, lease_s=60)
    for shard_id in shard_ids:
        attempt = _granted(leases.acquire(run_id, shard_id, f"proc-{shard_ids[0]}"))
        leases.publish(run_id, shard_id, attempt, _usage(), utcnow(), _key(shard_id, attempt))
    ledger.dispose()


def test_concurrent_worker_processes_on_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.create_schema()
    run_id = _new_run(ledger, shards=80)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_hammer, args=(url, run_id, list(range(i, 80, 4)))) for i in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    progress = ledger.progress(run_id)
    assert (progress.shards_done, progress.status) == (80, "completed")
    assert ledger.usage_totals(run_id).attempts == 80
