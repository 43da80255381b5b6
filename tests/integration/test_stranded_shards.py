"""What a host lost at the wrong moment leaves behind, and how the fleet gets over it: a shard whose
message vanished with its host before any attempt leased it is sent again once it has waited long with
its queue empty; a transaction left open by a vanished host ends on the server, releasing its locks."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta

from sqlalchemy import select, update

from core.broker.celery_app import create_app
from core.broker.url import connect
from core.settings import Settings
from storage.ledger import Ledger, utcnow
from storage.ledger.engine import create_ledger_engine
from storage.ledger.schema import Shard
from testkit.checks import record_run
from worker.reaper import resend_stranded_shards


def _age(ledger: Ledger, run_id: str, shard_id: int, seconds: float) -> None:
    with ledger.session() as session, session.begin():
        session.execute(
            update(Shard)
            .where(Shard.run_id == run_id, Shard.shard_id == shard_id)
            .values(enqueued_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_stranded_shard_is_sent_again_once_and_only_while_its_queue_is_empty(
    fresh_ledger_url: str, redis_url: str, redis_prefix: str
) -> None:
    # A ledger of its own: the reaper looks at every run, and the session's shared schema holds other
    # tests' runs, whose queued shards grow as old as these while the suite runs.
    ledger = Ledger(fresh_ledger_url)
    ledger.create_schema()
    leases = ledger.leases(max_attempts=3, lease_s=60)
    run_id = record_run(ledger, 3)
    run = ledger.get_run(run_id)
    assert run is not None
    _age(ledger, run_id, 0, 600)  # its message went with a lost host ten minutes ago
    _age(ledger, run_id, 1, 600)
    leases.acquire(run_id, 1, "w")  # ...but this one is being scored
    app = create_app(Settings(redis_key_prefix=redis_prefix), redis_url)
    client = connect(redis_url)
    key = f"{redis_prefix}{run.queue}"

    def length(queue: str) -> int:
        return int(client.llen(f"{redis_prefix}{queue}"))

    assert resend_stranded_shards(leases, ledger, app, lambda queue: 1, stranded_s=300) == 0
    assert resend_stranded_shards(leases, ledger, app, length, stranded_s=300) == 1
    assert client.llen(key) == 1  # the shard's message, sent again to its queue
    assert resend_stranded_shards(leases, ledger, app, lambda queue: 0, stranded_s=300) == 0
    [shard] = [shard for shard in ledger.shards(run_id) if shard.shard_id == 0]
    assert shard.status == "queued" and shard.enqueued_at is not None
    client.delete(key)
    client.close()


def test_a_transaction_left_open_by_a_lost_host_ends_and_frees_its_row(postgres_url: str) -> None:
    ledger = Ledger(postgres_url)
    ledger.create_schema()
    run_id = record_run(ledger, 1)
    lost_host = create_ledger_engine(postgres_url, idle_in_transaction_s=1.0)
    connection = lost_host.connect()
    connection.begin()
    connection.execute(select(Shard).where(Shard.run_id == run_id).with_for_update())
    # The host is gone: nothing commits, nothing closes the connection.
    started = time.monotonic()
    with ledger.session() as session, session.begin():  # as a reaper's requeue would: it needs the row
        session.execute(update(Shard).where(Shard.run_id == run_id).values(error="reaped"))
    assert time.monotonic() - started < 5, "the open transaction held its lock past the idle timeout"
    with contextlib.suppress(Exception):  # the server has ended that session
        connection.close()
    lost_host.dispose()
