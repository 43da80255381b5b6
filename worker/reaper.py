"""Gives the shards of dead workers back to the queue.

A worker killed mid-shard (OOM killer, preemption, SIGKILL) stops renewing its lease. Redis would hand
its unacknowledged message to another worker only after the visibility timeout, which must be long;
the reaper, running in every worker, notices the expired lease within seconds, moves the shard back to
"queued" (compare-and-set on the attempt number, so exactly one reaper wins) and sends it again.
"""

from __future__ import annotations

import logging
import threading

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
        send_shard(app, shard.ref(run.model), run.queue)
        log.warning(
            "shard %s/%s: attempt %d on %s stopped renewing its lease; sent again",
            shard.run_id,
            shard.shard_id,
            shard.attempts,
            shard.worker,
        )
        sent += 1
    return sent


class Reaper:
    """A daemon thread running ``requeue_expired_shards`` every ``interval_s`` seconds."""

    def __init__(self, leases: ShardLeases, ledger: Ledger, app: Celery, interval_s: float) -> None:
        self._args = (leases, ledger, app)
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
            except Exception:  # the broker or ledger may be restarting; the next pass retries
                log.exception("reaper pass failed")
