"""A running shard's progress as Celery task events, which Flower shows: pairs done of the shard's pairs.

Each shard task gets a ``ShardProgress`` for as long as it runs (``send_progress_events`` connects it
through Celery's task signals). Rerankers report the pairs they score through
``worker.backends.progress_sink``; the shard's count is sent as a custom ``task-progress`` event at most
every ``RERANK_PROGRESS_EVENT_S`` seconds, and always when its last pair is scored.

How it shows: Celery's event state turns an unknown ``task-<x>`` event into the custom state ``<X>``
(so the task reads ``PROGRESS``) and merges the event's fields into the task. Flower 2.2 displays only
the standard task fields, so the readable line goes in ``result`` ("1,200/2,000 pairs (60%)"), where
``update_state(state="PROGRESS", meta=...)`` would put it with a result backend; ``current`` and
``total`` carry the numbers for other event consumers. The ``task-succeeded`` event that follows
replaces the result with the task's return value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.signals import task_postrun, task_prerun

from core.errors import MessageError
from core.messages import TASK_NAME, ShardRef
from worker.backends.progress_sink import listen

log = logging.getLogger(__name__)

PROGRESS_EVENT = "task-progress"

SendProgress = Callable[[int, int], None]


def describe_progress(done: int, total: int) -> str:
    percent = done * 100 // total if total else 100
    return f"{done:,}/{total:,} pairs ({percent}%)"


class ShardProgress:
    """Counts the pairs a shard's reranker reports scored and sends the count, throttled.

    The count is capped at the shard's pairs: an embedding model reports the distinct queries and texts
    it embeds, which can add up to a little more. A local model reports distinct pairs, so a shard with
    duplicate pairs stops short of its total; its task's success says the rest."""

    def __init__(
        self,
        send: SendProgress,
        pairs_total: int,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.pairs_total = pairs_total
        self.interval_s = interval_s
        self._clock = clock
        self.pairs_done = 0
        self.pairs_sent = 0
        self._sent_at: float | None = None

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.pairs_done = min(self.pairs_total, self.pairs_done + max(pairs, 0))
        if self.pairs_done <= self.pairs_sent:
            return
        now = self._clock()
        finished = self.pairs_done == self.pairs_total
        if not finished and self._sent_at is not None and now - self._sent_at < self.interval_s:
            return
        self._send(self.pairs_done, self.pairs_total)
        self.pairs_sent = self.pairs_done
        self._sent_at = now


def task_event_sender(task: Task) -> SendProgress:
    """Sends ``task-progress`` events for the request ``task`` is running in this thread. The request is
    taken now, so the sender also works from the compute thread, where the model reports its batches."""
    request = task.request  # thread-local in Celery: read in the task's own thread

    def send(done: int, total: int) -> None:
        try:
            with task.app.events.default_dispatcher(hostname=request.hostname) as dispatcher:
                # No retries: a lost progress event is harmless, a shard waiting on the broker is not.
                dispatcher.send(
                    PROGRESS_EVENT,
                    uuid=request.id,
                    retry=False,
                    current=done,
                    total=total,
                    result=describe_progress(done, total),
                )
        except Exception as exc:  # progress is best effort; it must never fail the shard
            log.debug("progress event not sent: %s: %s", type(exc).__name__, exc)

    return send


def send_progress_events(interval_s: float) -> None:
    """From now on, every shard task this worker runs sends its progress as task events."""

    def begin(sender: Task | None = None, args: tuple[Any, ...] = (), **_: Any) -> None:
        if sender is None or sender.name != TASK_NAME or not args:
            return
        try:
            pairs = ShardRef.from_message(args[0]).pairs
        except MessageError:
            return  # the task itself refuses the message
        listen(ShardProgress(task_event_sender(sender), pairs, interval_s))

    def end(sender: Task | None = None, **_: Any) -> None:
        if sender is not None and sender.name == TASK_NAME:
            listen(None)

    # Both signals fire in the thread that runs the task, around its body.
    task_prerun.connect(begin, weak=False)
    task_postrun.connect(end, weak=False)
