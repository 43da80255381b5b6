"""Work ahead in a background thread: prepare the next chunk while the caller scores the current one.

The Hugging Face fast tokenizer and torch's kernels both release the GIL, so tokenizing chunk k + 1 in a
thread really runs alongside the forward passes of chunk k.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def one_ahead(jobs: Iterable[Callable[[], T]], overlap: bool = True) -> Generator[T, None, None]:
    """Yield each job's result in order; while the caller holds result k, job k + 1 already runs.

    With ``overlap=False`` each job runs only when its result is asked for, in the caller's thread.
    A job's exception is raised where its result would have been yielded. Closing the generator early
    waits for the job in flight and starts no other.
    """
    if not overlap:
        for job in jobs:
            yield job()
        return
    remaining = iter(jobs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank-ahead") as pool:
        pending = _submit_next(pool, remaining)
        while pending is not None:
            result = pending.result()
            pending = _submit_next(pool, remaining)
            yield result


def growing_chunks(count: int, first: int, growth: int = 2) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``range(count)``: ``first`` items, then each chunk ``growth`` times
    the one before; a remainder smaller than the chunk before it joins that chunk.

    A small first chunk gets the device busy soon; later ones grow so that each chunk's preparation hides
    behind the previous chunk's work while few chunks end in a part-full batch.
    """
    if first < 1 or growth < 1:
        raise ValueError(f"first and growth must be at least 1, got {first} and {growth}")
    bounds = []
    start, size = 0, first
    while start < count:
        stop = min(count, start + size)
        if count - stop < stop - start:
            stop = count
        bounds.append((start, stop))
        start, size = stop, size * growth
    return bounds


def _submit_next(pool: ThreadPoolExecutor, jobs: Iterator[Callable[[], T]]) -> Future[T] | None:
    job = next(jobs, None)
    return None if job is None else pool.submit(job)
