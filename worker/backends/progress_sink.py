"""Where a reranker tells whoever is listening that it scored some more pairs.

A reranker calls ``report_progress(n)`` each time it has scored ``n`` more pairs: after each batch of a
local model (its distinct pairs; the distinct queries and texts of an embedding model), after each
answered request of an API model. Nothing listens unless the worker installed a sink for the task
running in this thread (``listen``/``listening``), so benchmarks and tests that call a reranker directly
pay one context-variable lookup per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class ProgressSink(Protocol):
    def advance(self, pairs: int) -> None:
        """``pairs`` more pairs are scored."""
        ...


_sink: ContextVar[ProgressSink | None] = ContextVar("progress_sink", default=None)


def report_progress(pairs: int) -> None:
    """Tell the listening sink, if any, that ``pairs`` more pairs are scored."""
    sink = _sink.get()
    if sink is not None:
        sink.advance(pairs)


def listen(sink: ProgressSink | None) -> None:
    """Make ``sink`` (None: nobody) receive this thread's progress from now on."""
    _sink.set(sink)


@contextmanager
def listening(sink: ProgressSink) -> Iterator[None]:
    """``sink`` receives the progress reported inside the block."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
