"""Working one job ahead in a background thread (worker/backends/local/overlap.py)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.backends.local.overlap import growing_chunks, one_ahead


def test_results_come_in_order_and_the_next_job_runs_while_the_caller_holds_the_current() -> None:
    started = [threading.Event() for _ in range(3)]

    def job(index: int) -> int:
        started[index].set()
        return index * 10

    results = []
    for index, result in enumerate(one_ahead([lambda index=index: job(index) for index in range(3)])):
        results.append(result)
        if index < 2:
            # The caller has not asked for result index + 1, yet its job is already running.
            assert started[index + 1].wait(timeout=10)
    assert results == [0, 10, 20]


def test_without_overlap_each_job_runs_only_when_its_result_is_asked_for() -> None:
    ran: list[int] = []

    def job(index: int) -> int:
        ran.append(index)
        return index

    results = one_ahead([lambda index=index: job(index) for index in range(3)], overlap=False)

    assert next(results) == 0 and ran == [0]
    assert next(results) == 1 and ran == [0, 1]
    assert list(results) == [2]


def test_a_failing_job_raises_where_its_result_would_be() -> None:
    def fail() -> int:
        raise RuntimeError("tokenizer exploded")

    results = one_ahead([lambda: 1, fail, lambda: 3])

    assert next(results) == 1
    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        next(results)


def test_no_jobs_yield_nothing() -> None:
    assert list(one_ahead([])) == []


@given(count=st.integers(0, 5000), first=st.integers(1, 600), growth=st.integers(1, 4))
def test_growing_chunks_cover_everything_in_order(count: int, first: int, growth: int) -> None:
    bounds = growing_chunks(count, first, growth)

    covered = [index for start, stop in bounds for index in range(start, stop)]
    assert covered == list(range(count))
    sizes = [stop - start for start, stop in bounds]
    assert all(size > 0 for size in sizes)
    if len(sizes) > 1:
        assert sizes[0] == first
    for index, size in enumerate(sizes[:-1]):
        assert size == first * growth**index
    if len(sizes) > 1:
        # The last chunk is never smaller than the one before it: a short remainder joins it instead.
        assert sizes[-1] >= sizes[-2]


def test_growing_chunks_examples() -> None:
    assert growing_chunks(2000, 256) == [(0, 256), (256, 768), (768, 2000)]
    assert growing_chunks(300, 256) == [(0, 300)]
    with pytest.raises(ValueError, match="at least 1"):
        growing_chunks(10, 0)


def test_closing_early_waits_for_the_job_in_flight_and_starts_no_other() -> None:
    started: list[int] = []
    release = threading.Event()

    def job(index: int) -> int:
        started.append(index)
        if index == 1:
            release.wait(timeout=10)
        return index

    results = one_ahead([lambda index=index: job(index) for index in range(4)])
    assert next(results) == 0
    release.set()
    results.close()

    assert started == [0, 1]
