"""The progress sinks: several listen in the order installed, and one that raises stops the reporter."""

from __future__ import annotations

import pytest

from worker.backends.progress_sink import listen, listening, report_progress


class Recorder:
    def __init__(self, name: str, heard: list[tuple[str, int]]) -> None:
        self.name = name
        self.heard = heard

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.heard.append((self.name, pairs))


class Refuses:
    def advance(self, pairs: int, tokens: int = 0) -> None:
        raise LookupError(f"stop after {pairs}")


def test_the_task_sink_and_the_attempt_sink_both_hear_each_report_in_order() -> None:
    heard: list[tuple[str, int]] = []
    listen(Recorder("task", heard))
    try:
        with listening(Recorder("attempt", heard)):
            report_progress(3)
        report_progress(2)
    finally:
        listen(None)
    report_progress(1)  # nobody listens any more
    assert heard == [("task", 3), ("attempt", 3), ("task", 2)]


def test_a_sink_that_raises_stops_the_scoring_after_the_sinks_before_it_heard() -> None:
    heard: list[tuple[str, int]] = []
    with (
        listening(Recorder("task", heard)),
        listening(Refuses()),
        pytest.raises(LookupError, match="after 4"),
    ):
        report_progress(4)
    assert heard == [("task", 4)]
    report_progress(5)
    assert heard == [("task", 4)]
