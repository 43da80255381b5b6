"""The shared scoring pipeline of local models (worker/backends/local/pipeline.py), run with small fake
models that implement its protocol, and the distinct inputs it computes
(worker/backends/local/distinct.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from core.errors import DeviceOutOfMemoryError
from core.model_spec import ModelSpec
from worker.backends.local.batching import TokenBudgetBatcher
from worker.backends.local.device import ComputeTarget
from worker.backends.local.distinct import (
    Distinct,
    Pair,
    SideText,
    distinct_pairs,
    distinct_sides,
    unique_pairs,
    unique_strings,
)
from worker.backends.local.pipeline import LocalReranker, first_chunk_size, score
from worker.backends.progress_sink import listening

CPU = torch.device("cpu")


def pair_score(query: str, text: str) -> float:
    """What the fake pair model computes: any function of both sides will do."""
    return len(query) * 100.0 + len(text)


def pair_tokens(query: str, text: str) -> int:
    return len(query.split()) + len(text.split()) + 3


@dataclass(frozen=True)
class FakeChunk:
    items: list[Pair]
    lengths: np.ndarray


@dataclass(frozen=True)
class FakeBatch:
    padded_tokens: int
    values: torch.Tensor


class FakePairModel:
    """A joint model whose raw output is twice ``pair_score``; records which thread ran each step. A batch
    of more than ``oom_above`` padded tokens raises CUDA out-of-memory."""

    def __init__(self, oom_above: int | None = None) -> None:
        self.oom_above = oom_above
        self.tokenized: list[tuple[str, list[Pair]]] = []
        self.forwarded: list[tuple[str, int]] = []  # thread and rows of every forward, failed ones too
        self.failed: list[int] = []

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[Pair]:
        return distinct_pairs(queries, texts)

    def tokenize(self, items: list[Pair]) -> FakeChunk:
        self.tokenized.append((threading.current_thread().name, list(items)))
        lengths = np.array([pair_tokens(query, text) for query, text in items], dtype=np.int64)
        return FakeChunk(items, lengths)

    def collate(self, chunk: FakeChunk, rows: np.ndarray) -> FakeBatch:
        padded = len(rows) * int(chunk.lengths[rows].max())
        return FakeBatch(padded, torch.tensor([pair_score(*chunk.items[row]) for row in rows]))

    def forward(self, batch: FakeBatch) -> torch.Tensor:
        self.forwarded.append((threading.current_thread().name, len(batch.values)))
        if self.oom_above is not None and batch.padded_tokens > self.oom_above:
            self.failed.append(len(batch.values))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.values * 2

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        return (outputs / 2).numpy()

    def describe(self, token_budget: int) -> dict[str, str]:
        return {"activation": "none", "token_budget": str(token_budget)}


class Sink:
    def __init__(self) -> None:
        self.reports: list[int] = []

    def advance(self, pairs: int, tokens: int = 0) -> None:
        self.reports.append(pairs)


def run(
    model: FakePairModel | FakeBiEncoder,
    queries: list[str],
    texts: list[str],
    *,
    budget: int = 64,
    first_chunk: int = 4,
    overlap: bool = True,
    batcher: TokenBudgetBatcher | None = None,
) -> tuple[np.ndarray, int, float]:
    result = score(
        model,
        queries,
        texts,
        batcher=batcher or TokenBudgetBatcher(budget),
        device=CPU,
        first_chunk=first_chunk,
        overlap=overlap,
    )
    return result.scores, result.tokens, result.device_seconds


def corpus(n_queries: int = 5, docs: int = 8) -> tuple[list[str], list[str]]:
    """Queries and texts of varied lengths, each pair twice (the second copies in another order)."""
    pairs = [
        (f"query {q} " + "word " * (q % 3), f"text {d} of query {q} " + "more " * ((q + d) % 5))
        for q in range(n_queries)
        for d in range(docs)
    ]
    pairs += pairs[::-1]
    return [query for query, _ in pairs], [text for _, text in pairs]


def test_identical_pairs_are_computed_once_and_scores_keep_the_input_order() -> None:
    queries, texts = corpus()
    model = FakePairModel()

    scores, tokens, seconds = run(model, queries, texts)

    expected = [pair_score(query, text) for query, text in zip(queries, texts, strict=True)]
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, np.array(expected, dtype=np.float32))
    tokenized = [pair for _, items in model.tokenized for pair in items]
    distinct = list(dict.fromkeys(zip(queries, texts, strict=True)))
    # Each distinct pair once, the most characters first (equal ones in first-seen order).
    assert tokenized == sorted(distinct, key=lambda pair: -len(pair[0]) - len(pair[1]))
    assert sum(rows for _, rows in model.forwarded) == len(distinct)
    assert tokens == sum(pair_tokens(query, text) for query, text in distinct)
    assert seconds > 0


def test_chunks_grow_and_each_is_tokenized_off_the_compute_thread_while_the_one_before_runs() -> None:
    class WaitsForTheNextChunk(FakePairModel):
        """The first forward pass waits until the second chunk is being tokenized."""

        def __init__(self) -> None:
            super().__init__()
            self.second_chunk_started = threading.Event()
            self.overlapped: bool | None = None

        def tokenize(self, items: list[Pair]) -> FakeChunk:
            if self.tokenized:
                self.second_chunk_started.set()
            return super().tokenize(items)

        def forward(self, batch: FakeBatch) -> torch.Tensor:
            if self.overlapped is None:
                self.overlapped = self.second_chunk_started.wait(timeout=10)
            return super().forward(batch)

    queries, texts = corpus()  # 40 distinct pairs: chunks of 4, 8 and 28
    model = WaitsForTheNextChunk()

    scores, _, _ = run(model, queries, texts)

    assert model.overlapped is True
    assert [len(items) for _, items in model.tokenized] == [4, 8, 28]
    # The first chunk on the caller's thread, before the call's turn on the compute thread; the others
    # on the background thread.
    assert [thread for thread, _ in model.tokenized[:1]] == [threading.current_thread().name]
    assert all(thread.startswith("rerank-ahead") for thread, _ in model.tokenized[1:])
    assert all(thread.startswith("rerank-compute") for thread, _ in model.forwarded)
    serial = FakePairModel()
    assert np.array_equal(run(serial, queries, texts, overlap=False)[0], scores)
    # Without overlap each chunk is tokenized on the compute thread, just before it runs.
    assert all(thread.startswith("rerank-compute") for thread, _ in serial.tokenized)


def test_a_call_waiting_for_the_compute_thread_tokenizes_its_first_chunk_meanwhile() -> None:
    """A worker holding two shards: while the first shard's call runs on the compute thread, the second
    call, from another thread, tokenizes its first chunk instead of waiting idle for its turn."""

    class HoldsTheDevice(FakePairModel):
        def __init__(self) -> None:
            super().__init__()
            self.running = threading.Event()
            self.next_call_tokenized = threading.Event()
            self.waited: bool | None = None

        def tokenize(self, items: list[Pair]) -> FakeChunk:
            if items[0][0].startswith("second") and threading.current_thread().name == "second-shard":
                self.next_call_tokenized.set()
            return super().tokenize(items)

        def forward(self, batch: FakeBatch) -> torch.Tensor:
            if self.waited is None:  # the first call's first batch holds the device
                self.running.set()
                self.waited = self.next_call_tokenized.wait(timeout=10)
            return super().forward(batch)

    model = HoldsTheDevice()
    target = ComputeTarget(CPU, torch.float32, token_budget=64)
    reranker = LocalReranker(ModelSpec(kind="cross-encoder", name="fake"), model, target)
    results: dict[str, np.ndarray] = {}

    def second() -> None:
        model.running.wait(timeout=10)
        results["second"] = reranker.score(["second q"] * 3, ["a", "b", "c"]).scores

    thread = threading.Thread(target=second, name="second-shard")
    thread.start()
    results["first"] = reranker.score(["first q"] * 2, ["a", "b"]).scores
    thread.join(timeout=10)

    assert model.waited is True
    np.testing.assert_array_equal(results["first"], [pair_score("first q", t) for t in "ab"])
    np.testing.assert_array_equal(results["second"], [pair_score("second q", t) for t in "abc"])
    assert {thread for thread, _ in model.forwarded} == {"rerank-compute_0"}


def test_out_of_memory_halves_the_budget_and_loses_no_pair() -> None:
    queries = [f"q{index}" for index in range(40)]
    texts = ["t"] * 40  # 5 tokens a pair
    model = FakePairModel(oom_above=20)  # at most 4 pairs a batch fit
    batcher = TokenBudgetBatcher(80)
    sink = Sink()

    with listening(sink):
        scores, _, _ = run(model, queries, texts, first_chunk=1000, batcher=batcher)

    np.testing.assert_array_equal(scores, [pair_score(query, "t") for query in queries])
    assert model.failed == [16, 8]
    assert [(change.budget, change.reason) for change in batcher.history] == [
        (80, "start"),
        (40, "oom"),
        (20, "oom"),
    ]
    assert batcher.oom_count == 2
    assert sink.reports == [4] * 10  # the clean batches only


def test_a_single_pair_that_does_not_fit_is_a_clear_error() -> None:
    with pytest.raises(DeviceOutOfMemoryError, match="single item of 5 tokens"):
        run(FakePairModel(oom_above=4), ["q"], ["t"])


def test_progress_counts_every_distinct_pair_once_batch_by_batch() -> None:
    queries, texts = corpus()
    model = FakePairModel()
    sink = Sink()

    with listening(sink):
        run(model, queries, texts, budget=40)

    assert sink.reports == [rows for _, rows in model.forwarded]
    assert sum(sink.reports) == len(set(zip(queries, texts, strict=True)))
    assert len(sink.reports) > 3


def test_a_failing_tokenizer_reaches_the_caller() -> None:
    class FailsOnTheSecondChunk(FakePairModel):
        def tokenize(self, items: list[Pair]) -> FakeChunk:
            if self.tokenized:
                raise RuntimeError("tokenizer exploded")
            return super().tokenize(items)

    queries, texts = corpus()
    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        run(FailsOnTheSecondChunk(), queries, texts)


def test_empty_and_mismatched_input() -> None:
    scores, tokens, seconds = run(FakePairModel(), [], [])
    assert scores.shape == (0,) and scores.dtype == np.float32
    assert (tokens, seconds) == (0, 0.0)

    with pytest.raises(ValueError, match="pair up"):
        run(FakePairModel(), ["q", "r"], ["t"])


@dataclass(frozen=True)
class SideChunk:
    side: str
    strings: list[str]
    lengths: np.ndarray


class FakeBiEncoder:
    """Embeds a string as the unit vector at angle len(string), so a pair's cosine is
    cos(len(query) - len(text)); records the sides of each chunk it tokenizes."""

    def __init__(self) -> None:
        self.chunk_sides: list[set[str]] = []

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[SideText]:
        return distinct_sides(queries, texts)

    def tokenize(self, items: list[SideText]) -> SideChunk:
        self.chunk_sides.append({side for side, _ in items})
        strings = [string for _, string in items]
        return SideChunk(items[0][0], strings, np.array([len(s.split()) + 2 for s in strings]))

    def collate(self, chunk: SideChunk, rows: np.ndarray) -> torch.Tensor:
        return torch.tensor([float(len(chunk.strings[row])) for row in rows], dtype=torch.float64)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.cos(batch), torch.sin(batch)], dim=1)

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        return outputs.float().numpy()

    def describe(self, token_budget: int) -> dict[str, str]:
        return {"activation": "cosine similarity", "token_budget": str(token_budget)}


def test_a_bi_encoder_embeds_each_distinct_query_and_text_once_one_side_per_chunk() -> None:
    queries, texts = corpus()
    model = FakeBiEncoder()
    sink = Sink()

    with listening(sink):
        scores, _, _ = run(model, queries, texts, first_chunk=2)

    expected = np.cos([len(query) - len(text) for query, text in zip(queries, texts, strict=True)])
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
    assert scores.dtype == np.float32
    assert sum(sink.reports) == len(set(queries)) + len(set(texts))
    assert all(len(sides) == 1 for sides in model.chunk_sides)
    assert {side for sides in model.chunk_sides for side in sides} == {"query", "document"}


def test_a_local_reranker_scores_on_the_compute_thread_and_describes_itself() -> None:
    model = FakePairModel()
    target = ComputeTarget(CPU, torch.float32, token_budget=64)
    reranker = LocalReranker(ModelSpec(kind="cross-encoder", name="fake"), model, target)

    result = reranker.score(["q", "q", "r"], ["a", "a", "b"])

    np.testing.assert_array_equal(result.scores, [pair_score("q", "a")] * 2 + [pair_score("r", "b")])
    assert {thread for thread, _ in model.forwarded} == {"rerank-compute_0"}
    assert reranker.first_chunk == first_chunk_size(64) == 256
    assert list(reranker.describe().items()) == [
        ("kind", "cross-encoder"),
        ("name", "fake"),
        ("device", "cpu"),
        ("dtype", "float32"),
        ("batch_shapes", "free"),
        ("activation", "none"),
        ("token_budget", "64"),
    ]


def test_first_chunks_fill_a_budget_of_short_items() -> None:
    assert first_chunk_size(1024) == 256
    assert first_chunk_size(65536) == 1024


def test_unique_pairs_maps_every_pair_to_its_first_occurrence() -> None:
    pairs, inverse = unique_pairs(["q", "q", "r", "q"], ["a", "b", "a", "a"])
    assert pairs == [("q", "a"), ("q", "b"), ("r", "a")]
    assert inverse.tolist() == [0, 1, 2, 0]

    strings, index = unique_strings(["x", "y", "x"])
    assert strings == ["x", "y"]
    assert index.tolist() == [0, 1, 0]

    with pytest.raises(ValueError, match="2 queries but 1 texts"):
        unique_pairs(["q", "r"], ["a"])


def test_distinct_sides_tag_each_side_and_combine_by_dot_product() -> None:
    distinct = distinct_sides(["q", "r", "q"], ["a", "a", "b"])

    assert distinct.parts == ([("query", "q"), ("query", "r")], [("document", "a"), ("document", "b")])
    assert distinct.count == 4
    query_vectors = np.array([[1.0, 0.0], [0.0, 1.0]])
    text_vectors = np.array([[0.6, 0.8], [1.0, 0.0]])
    assert distinct.combine([query_vectors, text_vectors]).tolist() == [0.6, 0.8, 1.0]
    with pytest.raises(ValueError, match="pair up"):
        distinct_sides(["q"], [])
