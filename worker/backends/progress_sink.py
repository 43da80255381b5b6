"""Where a reranker tells whoever is listening that it scored some more pairs.

A reranker calls ``report_progress(n, tokens)`` each time it has scored ``n`` more pairs: after each
batch of a local model (its distinct pairs, or the distinct queries and texts of an embedding model, and
the tokens the batch fed the model), after each answered request of an API model (whose tokens are on
its request's usage record instead). Nothing listens unless the worker installed a sink for the task
running in this thread (``listen``/``listening``), so benchmarks and tests that call a reranker directly
pay one context-variable lookup per batch.

Several sinks can listen at once: the task's progress events (``listen``, for the whole task) and,
inside it, the shard attempt's lease check (``listening``, for the scoring). They hear each report in
the order they were installed. A sink may raise to stop the scoring: the exception leaves
``report_progress`` and so the reranker's ``score``, between two batches or requests, which is how an
attempt that lost its shard's lease stops (``worker/lease_keeper.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class ProgressSink(Protocol):
    def advance(self, pairs: int, tokens: int = 0) -> None:
        """``pairs`` more pairs are scored, feeding the model ``tokens`` tokens (0 where unknown).
        Raising here stops the scoring with that exception."""
        ...


_sinks: ContextVar[tuple[ProgressSink, ...]] = ContextVar("progress_sinks", default=())


def report_progress(pairs: int, tokens: int = 0) -> None:
    """Tell every listening sink, in the order they were installed, that ``pairs`` more pairs are
    scored with ``tokens`` tokens. An exception a sink raises propagates to the reranker's caller."""
    for sink in _sinks.get():
        sink.advance(pairs, tokens)


def listen(sink: ProgressSink | None) -> None:
    """Make ``sink`` alone (None: nobody) receive this thread's progress from now on."""
    _sinks.set(() if sink is None else (sink,))


@contextmanager
def listening(sink: ProgressSink) -> Iterator[None]:
    """``sink`` also receives the progress reported inside the block, after the sinks already
    listening."""
    token = _sinks.set((*_sinks.get(), sink))
    try:
        yield
    finally:
        _sinks.reset(token)
