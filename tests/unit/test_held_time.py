"""A worker process's wall time is charged to its shard attempts once, however many overlap."""

from __future__ import annotations

import threading

import pytest

from worker.held_time import HeldTime


def test_attempts_one_after_another_are_charged_their_whole_spans() -> None:
    held = HeldTime()
    assert held.charge(0.0, 4.0) == 4.0
    assert held.charge(5.0, 7.5) == 2.5  # the idle second between them is nobody's


@pytest.mark.parametrize(
    "spans",
    [
        [(0.0, 10.0), (2.0, 14.0)],  # the second shard leased while the first was scored
        [(2.0, 8.0), (0.0, 10.0)],  # an attempt inside another finishes first
        [(0.0, 3.0), (5.0, 9.0), (2.0, 6.0)],  # one bridging two that were already charged
    ],
)
def test_overlapping_attempts_add_up_to_the_union_of_their_spans(spans: list[tuple[float, float]]) -> None:
    held = HeldTime()
    charged = [held.charge(start, end) for start, end in spans]
    union = {
        ((0.0, 10.0), (2.0, 14.0)): 14.0,
        ((2.0, 8.0), (0.0, 10.0)): 10.0,
        ((0.0, 3.0), (5.0, 9.0), (2.0, 6.0)): 9.0,
    }[tuple(spans)]
    assert all(seconds >= 0 for seconds in charged)
    assert sum(charged) == pytest.approx(union)


def test_a_span_charged_twice_costs_nothing_the_second_time() -> None:
    held = HeldTime()
    assert held.charge(1.0, 2.0) == 1.0
    assert held.charge(1.0, 2.0) == 0.0
    assert held.charge(3.0, 3.0) == 0.0


def test_threads_charging_at_once_never_charge_an_instant_twice() -> None:
    held = HeldTime()
    charged: list[float] = []
    spans = [(index * 0.5, index * 0.5 + 3.0) for index in range(200)]

    def charge(part: list[tuple[float, float]]) -> None:
        for start, end in part:
            charged.append(held.charge(start, end))

    threads = [threading.Thread(target=charge, args=(spans[index::4],)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(charged) == pytest.approx(199 * 0.5 + 3.0)
