"""A shard's progress: a reranker's per-batch reports become throttled, never-decreasing pairs counts."""

from __future__ import annotations

import numpy as np

from worker.backends.local.batching import TokenBudgetBatcher
from worker.backends.progress_sink import listening, report_progress
from worker.task_events import ShardProgress, describe_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_scored_pairs_are_sent_at_most_once_per_interval_and_always_at_the_end() -> None:
    sent: list[tuple[int, int]] = []
    clock = Clock()
    progress = ShardProgress(lambda *report: sent.append(report), 1000, interval_s=1.0, clock=clock)
    progress.advance(100)  # the first report goes out at once
    clock.now = 0.5
    progress.advance(400)  # too soon
    clock.now = 1.2
    progress.advance(100)
    progress.advance(-50)  # never backwards
    clock.now = 1.3
    progress.advance(400)  # the last pair goes out whatever the interval
    progress.advance(0)  # and only once
    assert sent == [(100, 1000), (600, 1000), (1000, 1000)]


def test_the_count_stops_at_the_shards_pairs() -> None:
    """An embedding model reports its distinct queries and texts, which may add up to more pairs."""
    sent: list[int] = []
    progress = ShardProgress(lambda done, _: sent.append(done), 7, interval_s=0.0)
    for scored in (0, 2, 3, 4, 5):
        progress.advance(scored)
    assert sent == [2, 5, 7]
    assert progress.pairs_done == 7


class Sink:
    def __init__(self) -> None:
        self.reports: list[int] = []

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.reports.append(pairs)


def test_the_batcher_reports_every_clean_batch_to_the_listening_sink() -> None:
    sink = Sink()
    lengths = np.array([8, 8, 8, 8, 8])
    batcher = TokenBudgetBatcher(max_budget=16)
    with listening(sink):
        batcher.run(lengths, lambda batch: np.zeros(len(batch)))
    assert sink.reports == [2, 2, 1]
    # Outside a shard nobody listens, and reporting costs nothing.
    batcher.run(lengths, lambda batch: np.zeros(len(batch)))
    report_progress(1)
    assert sink.reports == [2, 2, 1]


def test_progress_reads_as_pairs_done_of_total() -> None:
    assert describe_progress(1200, 2000) == "1,200/2,000 pairs (60%)"
    assert describe_progress(1999, 2000) == "1,999/2,000 pairs (99%)"
    assert describe_progress(0, 0) == "0/0 pairs (100%)"
