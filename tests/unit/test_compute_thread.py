"""Local models load and score on one compute thread per process, whichever thread asks."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from pathlib import Path

import pytest

from testkit.model_factory import build_tiny_cross_encoder
from testkit.model_factory import load_cross_encoder_on_cpu as load
from worker.backends.local.compute_thread import is_compute_thread, on_compute_thread
from worker.backends.progress_sink import listening

_caller_value: ContextVar[str] = ContextVar("caller_value", default="unset")


def _where() -> tuple[int, str]:
    return threading.get_ident(), _caller_value.get()


def _in_threads(function, count: int = 3) -> list:
    results: list = [None] * count

    def run(index: int) -> None:
        _caller_value.set(f"caller {index}")
        results[index] = function()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_calls_from_any_thread_run_on_one_thread_in_the_callers_context() -> None:
    found = _in_threads(lambda: on_compute_thread(_where))

    assert len({ident for ident, _ in found}) == 1
    assert threading.get_ident() not in {ident for ident, _ in found}
    assert [value for _, value in found] == ["caller 0", "caller 1", "caller 2"]
    assert not is_compute_thread()


def test_a_call_from_the_compute_thread_runs_in_place_and_errors_reach_the_caller() -> None:
    outer, inner = on_compute_thread(lambda: (threading.get_ident(), on_compute_thread(threading.get_ident)))
    assert outer == inner

    def fail() -> None:
        raise KeyError("no such thing")

    with pytest.raises(KeyError, match="no such thing"):
        on_compute_thread(fail)


class _ThreadsSeen:
    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.pairs = 0

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.threads.add(threading.get_ident())
        self.pairs += pairs


def test_a_reranker_loads_and_scores_on_the_compute_thread_and_reports_progress_to_its_caller(
    tmp_path: Path,
) -> None:
    reranker = load(build_tiny_cross_encoder(tmp_path / "model"), compile="off")
    compute_thread = on_compute_thread(threading.get_ident)
    queries = ["what is a cat", "python", "python"]
    texts = ["A cat is a small mammal.", "a programming language", "a large snake"]
    sinks = [_ThreadsSeen() for _ in range(3)]

    def score_with(index: int):
        with listening(sinks[index]):
            return reranker.score(queries, texts).scores

    scores = _in_threads(lambda: score_with(int(_caller_value.get().split()[-1])))

    for sink in sinks:
        assert sink.threads == {compute_thread}, "every batch ran on the thread that loaded the model"
        assert sink.pairs == len(queries)
    assert all((found == scores[0]).all() for found in scores)
