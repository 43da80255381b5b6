"""Worker liveness in Redis: each worker beats a short-lived key per queue it consumes, so the producer
can tell whether anyone serves a model, even while every worker is busy with a long shard."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

import redis

from core.broker.url import connect

log = logging.getLogger(__name__)


def presence_key(prefix: str, queue: str, hostname: str = "*") -> str:
    return f"{prefix}presence:{queue}:{hostname}"


class PresenceBeat:
    """A daemon thread that refreshes this worker's key every ``interval_s`` seconds."""

    def __init__(self, broker_url: str, prefix: str, queue: str, hostname: str, interval_s: float) -> None:
        self._client = connect(broker_url)
        self._key = presence_key(prefix, queue, hostname)
        self._interval_s = interval_s
        self._payload = json.dumps({"hostname": hostname, "queue": queue, "since": time.time()})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence-beat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 1)
        with contextlib.suppress(redis.RedisError):
            self._client.delete(self._key)

    def _beat(self) -> None:
        self._client.set(self._key, self._payload, ex=max(1, int(self._interval_s * 3)))

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except redis.RedisError as error:
                # The broker may be restarting; the next beat retries.
                log.warning("presence beat for %s failed: %s", self._key, error)
            except Exception:
                # A dead beat thread would leave a healthy worker looking gone: log and keep beating.
                log.exception("presence beat for %s failed", self._key)
            if self._stop.wait(self._interval_s):
                return


def live_workers(broker_url: str, prefix: str, queue: str) -> list[str]:
    """Hostnames of workers that beat for ``queue`` within the last few intervals."""
    client = connect(broker_url)
    try:
        keys = list(client.scan_iter(match=presence_key(prefix, queue), count=500))
    finally:
        client.close()
    return sorted(key.decode().rsplit(":", 1)[-1] for key in keys)
