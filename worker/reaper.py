"""Gives the shards of dead workers back to the queue.

A worker killed mid-shard (OOM killer, preemption, SIGKILL, a host cut off) stops renewing its lease.
Redis would hand its unacknowledged message to another worker only after the visibility timeout, which
must be long; the reaper, running in every worker, notices the expired lease within seconds, moves the
shard back to "queued" (compare-and-set on the attempt number, so exactly one reaper wins) and sends it
again.

A host can also be lost in the moment after it took a shard's message and before it leased the shard
(or while it held a retry's delayed message): the shard stays "queued" and nothing holds a lease on it.
When such a shard has waited longer than ``stranded_s`` while its queue in Redis is empty (so no
message of it is waiting there), the reaper sends it again. A duplicate this might make is harmless:
the ledger's fence lets only one attempt publish, and a late copy finds the shard done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery

from core.messages import send_shard
from storage.ledger import Ledger
from storage.ledger.leases import ShardLeases

log = logging.getLogger(__name__)


def requeue_expired_shards(leases: ShardLeases, ledger: Ledger, app: Celery) -> int:
    """One pass: re-send every shard whose lease expired. Returns how many were re-sent."""
    sent = 0
    for shard in leases.expired():
        run = ledger.get_run(shard.run_id)
        if run is None or not leases.requeue_expired(shard.run_id, shard.shard_id, shard.attempts):
            continue
        send_shard(app, shard.ref(run), run.queue)
        log.warning(
            "shard %s/%s: attempt %d on %s stopped renewing its lease; sent again",
            shard.run_id,
            shard.shard_id,
            shard.attempts,
            shard.worker,
        )
        sent += 1
    return sent


def resend_stranded_shards(
    leases: ShardLeases, ledger: Ledger, app: Celery, queue_length: Callable[[str], int], stranded_s: float
) -> int:
    """One pass: re-send every shard queued longer than ``stranded_s`` whose queue is empty. Returns how
    many were re-sent."""
    sent = 0
    empty: dict[str, bool] = {}
    for shard in leases.stranded(stranded_s):
        run = ledger.get_run(shard.run_id)
        if run is None or shard.enqueued_at is None:
            continue
        if run.queue not in empty:
            empty[run.queue] = queue_length(run.queue) == 0
        if not empty[run.queue] or not leases.resend_stranded(
            shard.run_id, shard.shard_id, shard.enqueued_at
        ):
            continue
        send_shard(app, shard.ref(run), run.queue)
        log.warning(
            "shard %s/%s: queued for over %.0fs with its queue empty (its message was lost with a host); "
            "sent again",
            shard.run_id,
            shard.shard_id,
            stranded_s,
        )
        sent += 1
    return sent


class Reaper:
    """A daemon thread running ``requeue_expired_shards`` and ``resend_stranded_shards`` every
    ``interval_s`` seconds."""

    def __init__(
        self,
        leases: ShardLeases,
        ledger: Ledger,
        app: Celery,
        interval_s: float,
        queue_length: Callable[[str], int],
        stranded_s: float,
    ) -> None:
        self._args = (leases, ledger, app)
        self._queue_length = queue_length
        self._stranded_s = stranded_s
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                requeue_expired_shards(*self._args)
                resend_stranded_shards(*self._args, self._queue_length, self._stranded_s)
            except Exception:  # the broker or ledger may be restarting; the next pass retries
                log.exception("reaper pass failed")
