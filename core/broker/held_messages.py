"""Which shard messages each worker holds, in Redis, so that the messages of a dead worker are sent again
as soon as its presence lapses.

A worker takes messages before it starts them: ``RERANK_SHARDS_IN_FLIGHT`` of them, and a retry's
delayed message until its countdown ends. Killed in that moment, it takes them with it: Redis gives an
unacknowledged message back only after the visibility timeout (hours), and no lease was taken that
could expire. Each worker therefore counts, per shard, the messages it has received and not yet
finished in a hash beside its presence key (``held:<queue>:<hostname>`` next to
``presence:<queue>:<hostname>``). A hash whose presence key is gone belongs to a dead worker: the
reapers of the live ones send its queued shards again (``worker.reaper``) and delete it. A worker that
stops cleanly deletes its hash first: on a warm shutdown Redis gets its unstarted messages back at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from core.broker.presence import presence_key

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
    """This worker's count of the shard messages it holds, kept in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, queue: str, hostname: str) -> None:
        self._client = client
        self._key = held_key(prefix, queue, hostname)

    def hand_over_leftovers(self) -> None:
        """Before taking any message: counts left under this worker's key by a predecessor of the same
        name (killed, then restarted) move to a key with no presence twin, where reapers find them."""
        if self._client.exists(self._key):
            self._client.renamenx(self._key, f"{self._key}{LEFT_BEHIND}{time.time_ns()}")

    def took(self, run_id: str, shard_id: int) -> None:
        """A message of shard ``run_id/shard_id`` arrived (before it is started)."""
        self._client.hincrby(self._key, _field(run_id, shard_id), 1)

    def finished(self, run_id: str, shard_id: int) -> None:
        """One message of that shard is done with (returned, failed, retried or revoked); the shard's
        field goes once no message of it is held (a retry's new message may arrive before its
        predecessor finishes)."""
        self._client.eval(_FINISHED, 1, self._key, _field(run_id, shard_id))

    def forget_all(self) -> None:
        """The worker stops cleanly: what it had not started goes back to Redis by itself."""
        self._client.delete(self._key)


# Decrement and drop a spent field in one step: a message of the shard may arrive between the two.
_FINISHED = """
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if count <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return count
"""


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
