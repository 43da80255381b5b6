"""One thread per process runs all of a local model's torch work: loading, compiling and scoring.

PyTorch's OpenMP runtime (libgomp) gives every thread that starts a parallel region a thread team of its
own, and once a process has more OpenMP threads than cores its idle helpers stop spinning between
regions and sleep, so each op of a forward pass first waits for them to wake. A Celery worker loads its
model in the main thread and scores in its task thread: two teams. On 2 cores that thread scored ~10%
slower than the thread that had loaded the model, and the pipeline ran at 80% of the in-process rate;
loading and scoring in the same thread, whichever it is, was as fast as the main thread alone. Callers
on any thread hand their work to this one and wait; context variables (the progress sink) go with it.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_here = threading.local()


def _mark_compute_thread() -> None:
    _here.is_compute_thread = True


_executor = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="rerank-compute", initializer=_mark_compute_thread
)


def on_compute_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` run on the compute thread, in the caller's context; its result or
    its exception. Called from the compute thread itself, it runs right away."""
    if is_compute_thread():
        return function(*args, **kwargs)
    context = contextvars.copy_context()
    call = functools.partial(function, *args, **kwargs)
    return _executor.submit(context.run, call).result()


def runs_on_compute_thread(function: Callable[P, T]) -> Callable[P, T]:
    """Decorate ``function`` so that every call of it runs on the compute thread."""

    @functools.wraps(function)
    def on_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        return on_compute_thread(function, *args, **kwargs)

    return on_thread


def is_compute_thread() -> bool:
    """Whether the calling thread is the compute thread."""
    return bool(getattr(_here, "is_compute_thread", False))
