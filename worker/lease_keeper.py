"""A shard attempt's hold on its lease: kept alive from a background thread while the shard is scored,
and, once another attempt has taken the shard over, the scoring stopped at its next batch or request.

An attempt loses its lease when it could not renew it in time (its process stalled, the ledger was
unreachable for longer than the lease) and another worker took the shard. From then on the ledger's
fence refuses its scores, so every further batch would be wasted: the attempt's ``LeaseGuard`` listens
to the reranker's progress reports (``worker/backends/progress_sink.py``) and raises ``LeaseLostError``
at the first one after the loss, having counted what the attempt scored until then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from core.errors import RerankError
from storage.ledger.leases import ShardLeases

log = logging.getLogger(__name__)


class LeaseLostError(RerankError):
    """Raised in the scoring of a shard attempt whose lease another attempt has taken over; the attempt
    can no longer publish, so it stops and records what it consumed. Not a failure of the shard."""


class LeaseKeeper:
    """Renews the lease every third of its length; ``lost`` turns true once another attempt took over."""

    def __init__(self, leases: ShardLeases, run_id: str, shard_id: int, attempt: int) -> None:
        self._leases = leases
        self._key = (run_id, shard_id, attempt)
        self._interval_s = leases.lease.total_seconds() / 3
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{run_id}-{shard_id}", daemon=True)

    @property
    def lost(self) -> bool:
        """Whether a renewal found the shard held by a newer attempt (set by the renewing thread)."""
        return self._lost.is_set()

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
                    self._lost.set()
                    log.warning("shard %s/%s: attempt %s lost its lease to a newer attempt", *self._key)
                    return
            except Exception:  # a ledger hiccup: try again at the next interval
                log.exception("shard %s/%s: renewing the lease failed", *self._key[:2])


class LeaseGuard:
    """The progress sink an attempt scores under: counts the pairs the reranker reports and, at the
    first report after ``keeper`` lost the lease, stops the scoring with ``LeaseLostError``.

    ``pairs`` and ``tokens`` are what the reranker reported (distinct pairs of a local model; for an
    embedding model its distinct queries and texts, so it can exceed the pairs asked for). ``seconds``
    runs from the guard's creation, just before scoring starts, to the last report: how long the
    attempt kept its model busy on batches that finished."""

    def __init__(self, keeper: LeaseKeeper, clock: Callable[[], float] = time.monotonic) -> None:
        self._keeper = keeper
        self._clock = clock
        self._started = clock()
        self.pairs = 0
        self.tokens = 0
        self.seconds = 0.0
        self.stopped = False

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.pairs += max(pairs, 0)
        self.tokens += max(tokens, 0)
        self.seconds = self._clock() - self._started
        if self._keeper.lost:
            self.stopped = True
            raise LeaseLostError("another attempt took over the shard's lease; this attempt stops scoring")
