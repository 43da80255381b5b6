"""Which shard messages each worker holds, in Redis, so that the messages of a dead worker are sent again
as soon as its presence lapses.

A worker takes messages before it starts them: ``RERANK_SHARDS_IN_FLIGHT`` of them, and a retry's
delayed message until its countdown ends. Killed in that moment, it takes them with it: Redis gives an
unacknowledged message back only after the visibility timeout (hours), and no lease was taken that
could expire. Each worker therefore counts, per shard, the messages it has received and not yet
finished (in memory: Celery's signals come on its consumer's event loop, which must not wait on the
network) and writes the counts to a hash beside its presence key (``held:<queue>:<hostname>`` next to
``presence:<queue>:<hostname>``). A hash whose presence key is gone belongs to a dead worker: the
reapers of the live ones send its queued shards again (``worker.reaper``) and delete it. A worker that
stops cleanly deletes its hash first: on a warm shutdown Redis gets its unstarted messages back at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from core.broker.presence import presence_key

log = logging.getLogger(__name__)

HELD = "held:"
PRESENCE = "presence:"
LEFT_BEHIND = ":left-behind-"  # a dead predecessor's counts, renamed away from the live worker's key


def held_key(prefix: str, queue: str, hostname: str) -> str:
    """The hash of the messages ``hostname`` holds from ``queue``: its presence key's twin."""
    return presence_key(prefix, queue, hostname).replace(f"{prefix}{PRESENCE}", f"{prefix}{HELD}", 1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(run_id: str, shard_id: int) -> str:
    return f"{run_id}/{shard_id}"


class HeldMessages:
    """This worker's count of the shard messages it holds: kept in memory, where Celery's signals update
    it without waiting, and written whole to Redis by a daemon thread as soon as it changes and every
    ``interval_s`` (a Redis restarted empty gets it back within an interval)."""

    def __init__(
        self, client: redis.Redis, prefix: str, queue: str, hostname: str, interval_s: float
    ) -> None:
        self._client = client
        self._key = held_key(prefix, queue, hostname)
        self._interval_s = interval_s
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="held-messages", daemon=True)

    def start(self) -> None:
        """Before taking any message: counts left under this worker's key by a predecessor of the same
        name (killed, then restarted) move to a key with no presence twin, where reapers find them."""
        if self._client.exists(self._key):
            self._client.renamenx(self._key, f"{self._key}{LEFT_BEHIND}{time.time_ns()}")
        self._thread.start()

    def took(self, run_id: str, shard_id: int) -> None:
        """A message of shard ``run_id/shard_id`` arrived (before it is started)."""
        field = _field(run_id, shard_id)
        with self._lock:
            self._counts[field] = self._counts.get(field, 0) + 1
        self._changed.set()

    def finished(self, run_id: str, shard_id: int) -> None:
        """One message of that shard is done with (returned, failed, retried or revoked)."""
        field = _field(run_id, shard_id)
        with self._lock:
            left = self._counts.get(field, 0) - 1
            if left > 0:
                self._counts[field] = left
            else:
                self._counts.pop(field, None)
        self._changed.set()

    def publish(self) -> None:
        """Write the counts to Redis, replacing what is there, in one transaction."""
        with self._lock:
            counts = dict(self._counts)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self._key)
        for field, count in counts.items():
            pipe.hset(self._key, field, count)
        pipe.execute()

    def stop(self) -> None:
        """The worker stops cleanly: what it had not started goes back to Redis by itself."""
        self._stop.set()
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval_s + 5)
        with contextlib.suppress(redis.RedisError):
            self._client.delete(self._key)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self._interval_s)
            self._changed.clear()
            if self._stop.is_set():
                return
            try:
                self.publish()
            except Exception as error:  # the broker may be restarting: the next change or interval retries
                log.warning("cannot write held messages to %s: %s", self._key, error)


@dataclass(frozen=True)
class OrphanedShard:
    """A shard whose message a dead worker held: ``key`` is that worker's hash."""

    key: str
    run_id: str
    shard_id: int


class DeadWorkersMessages:
    """What the reaper asks of the hashes: the shards held by dead workers, and forgetting one."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def orphaned(self) -> Iterator[OrphanedShard]:
        """Every shard held by a worker whose presence key has lapsed."""
        for raw_key in self._client.scan_iter(match=f"{self._prefix}{HELD}*", count=500):
            key = _text(raw_key)
            presence = f"{self._prefix}{PRESENCE}{key[len(self._prefix) + len(HELD) :]}"
            if self._client.exists(presence):
                continue
            for raw_field, raw_count in self._client.hgetall(key).items():
                run_id, _, shard = _text(raw_field).rpartition("/")
                if int(raw_count) > 0 and run_id and shard.isdigit():
                    yield OrphanedShard(key, run_id, int(shard))

    def release(self, orphan: OrphanedShard) -> None:
        """Drop ``orphan`` from its dead worker's hash: it has been dealt with."""
        self._client.hdel(orphan.key, _field(orphan.run_id, orphan.shard_id))
