"""Keeps a shard attempt's lease alive from a background thread while the shard is being scored."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from storage.ledger.leases import ShardLeases

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the lease every third of its length; ``lost`` turns true once another attempt took over."""

    def __init__(self, leases: ShardLeases, run_id: str, shard_id: int, attempt: int) -> None:
        self._leases = leases
        self._key = (run_id, shard_id, attempt)
        self._interval_s = leases.lease.total_seconds() / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{run_id}-{shard_id}", daemon=True)
        self.lost = False

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not self._leases.renew(*self._key):
                    self.lost = True
                    log.warning("shard %s/%s: attempt %s lost its lease to a newer attempt", *self._key)
                    return
            except Exception:  # a ledger hiccup: try again at the next interval
                log.exception("shard %s/%s: renewing the lease failed", *self._key[:2])
