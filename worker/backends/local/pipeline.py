"""The scoring pipeline every local model runs through; a model brings only its own steps.

``score`` takes the distinct items of a call (``distinct``), sorts each part by characters (so that a
chunk holds items of similar lengths and fills few length buckets), cuts it into growing chunks,
tokenizes the first chunk on the caller's thread (a call waiting for the compute thread gets ready
meanwhile) and chunk k + 1 on a background thread while chunk k runs through the model in length-sorted
batches under the token budget (``TokenBudgetBatcher``: out-of-memory halves the budget and retries,
progress is reported per batch), times the forward passes on the device clock, and builds the
``ScoreResult``. Everything after the first chunk runs on the process's compute thread, so calls from
several threads take turns.

A model implements ``LocalModel``, in the spirit of a pre-process / core / post-process split:

- ``distinct(queries, texts)``: which items it computes, from ``distinct`` (``distinct_pairs`` for a
  model that reads a pair at once, ``distinct_sides`` for a bi-encoder);
- ``tokenize(items)``: a chunk with ``lengths`` (tokens per item, which decide the batches) and whatever
  ``collate`` needs. It runs on a background thread or the caller's (one at a time) while ``collate``
  and ``forward`` run on the compute thread, so it must share no mutable state with them (use a private
  copy of a Hugging Face tokenizer: its calls reconfigure the shared Rust backend);
- ``collate(chunk, rows)``: the device inputs of one batch of a chunk's rows;
- ``forward(batch)``: the model's raw outputs, one row per item (the only step the device clock times);
  on CUDA they are copied to pinned host memory behind the kernels, without waiting for them;
- ``postprocess(outputs)``: those outputs, on the host, as float32 rows (a score, or a vector for a
  bi-encoder), once the chunk's batches have all been launched (one wait per chunk, not per batch);
- ``describe(token_budget)``: the model's entries of ``Reranker.describe`` after kind, name, device and
  dtype.

To add a local backend: write a module with such a model and a loader ``load_<kind>(spec, settings)`` that
loads the weights on ``resolve_compute(settings)`` and returns ``LocalReranker(spec, model, target)``; then
add one ``LocalKind("<kind>", "worker.backends.local.<module>:load_<kind>", "<summary>")`` line to
``core/kinds.py``. ``worker.backends.load_reranker`` calls the loader on the compute thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from core.model_spec import ModelSpec
from worker.backends.base import ScoreResult
from worker.backends.local.batch_shapes import FixedShapes
from worker.backends.local.batching import DeferredRows, TokenBudgetBatcher, length_order
from worker.backends.local.compute_thread import runs_on_compute_thread
from worker.backends.local.device import ComputeTarget, ForwardClock, HostCopy, describe_dtype
from worker.backends.local.distinct import Distinct
from worker.backends.local.overlap import growing_chunks, one_ahead

# Items in the first chunk: a budget's worth of 64-token items, at least 256, so the device starts soon.
MIN_FIRST_CHUNK = 256
FIRST_CHUNK_TOKENS_PER_ITEM = 64


class Tokenized(Protocol):
    """A tokenized chunk; ``lengths`` (tokens per item, after truncation) decide the batches. A chunk
    may also have ``truncated`` (bool per item, or None), the per-pair provenance of the output."""

    @property
    def lengths(self) -> np.ndarray: ...


ItemT = TypeVar("ItemT")
ChunkT = TypeVar("ChunkT", bound=Tokenized)
BatchT = TypeVar("BatchT")
ModelT = TypeVar("ModelT", bound="LocalModel[Any, Any, Any]")


class LocalModel(Protocol[ItemT, ChunkT, BatchT]):
    """One kind of local model, as the steps ``score`` runs (see the module docstring)."""

    def distinct(self, queries: Sequence[str], texts: Sequence[str]) -> Distinct[ItemT]:
        """The distinct items of a call; raises ``ValueError`` when queries and texts do not pair up."""
        ...

    def tokenize(self, items: list[ItemT]) -> ChunkT:
        """Tokenize a chunk of items from one part; runs off the compute thread, one call at a time."""
        ...

    def collate(self, chunk: ChunkT, rows: np.ndarray) -> BatchT:
        """The model inputs of ``rows`` (indices into the chunk) on the device."""
        ...

    def forward(self, batch: BatchT) -> torch.Tensor:
        """Raw model outputs, one row per batch row."""
        ...

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        """``forward``'s outputs as float32 rows on the host."""
        ...

    def describe(self, token_budget: int) -> dict[str, str]:
        """The model's own entries of ``Reranker.describe``."""
        ...


def score(
    model: LocalModel[Any, Any, Any],
    queries: Sequence[str],
    texts: Sequence[str],
    *,
    batcher: TokenBudgetBatcher,
    device: torch.device,
    first_chunk: int,
    overlap: bool = True,
) -> ScoreResult:
    """Score pair i = (queries[i], texts[i]) with ``model``; identical inputs are computed once.

    The call is prepared on the caller's thread, its first chunk tokenized there, and then runs on the
    compute thread. A call that waits its turn (the next shard of a worker holding several) is so ready
    to run the moment the compute thread frees. With ``overlap=False`` each chunk is tokenized on the
    compute thread just before it runs.
    """
    call = prepare_call(model, queries, texts, first_chunk=first_chunk, tokenize_first=overlap)
    return run_call(model, call, batcher=batcher, device=device, overlap=overlap)


@dataclass
class PreparedCall(Generic[ItemT]):
    """A call's distinct items cut into chunks, the items of each part in ``longest_first`` order."""

    distinct: Distinct[ItemT]
    orders: list[np.ndarray]
    chunks: list[tuple[int, list[ItemT]]]  # (part, items)
    first: Tokenized | None  # the first chunk, when tokenized ahead


# A model's tokenizer copy serves one thread at a time: the call that prepares its first chunk and the
# one whose chunks are tokenized ahead of its forward passes take turns. A process hosts one model.
_tokenizer_turns = threading.Lock()


def _tokenize(model: LocalModel[ItemT, ChunkT, Any], items: list[ItemT]) -> ChunkT:
    with _tokenizer_turns:
        return model.tokenize(items)


def prepare_call(
    model: LocalModel[ItemT, Any, Any],
    queries: Sequence[str],
    texts: Sequence[str],
    *,
    first_chunk: int,
    tokenize_first: bool,
) -> PreparedCall[ItemT]:
    """The work of a call that needs no device: its distinct items, their order and chunks, and (with
    ``tokenize_first``) its first chunk tokenized. Runs on the caller's thread."""
    distinct = model.distinct(queries, texts)
    # Chunks cut from items sorted by characters hold items of similar token lengths, so each chunk's
    # length-sorted batches fill few length buckets, and few of them end in a part-full batch.
    orders = [longest_first(part_items) for part_items in distinct.parts]
    chunks = [
        (part, [part_items[index] for index in order[start:stop]])
        for part, (part_items, order) in enumerate(zip(distinct.parts, orders, strict=True))
        for start, stop in growing_chunks(len(part_items), first_chunk)
    ]
    first = _tokenize(model, chunks[0][1]) if tokenize_first and chunks else None
    return PreparedCall(distinct, orders, chunks, first)


@runs_on_compute_thread
def run_call(
    model: LocalModel[Any, Any, Any],
    call: PreparedCall[Any],
    *,
    batcher: TokenBudgetBatcher,
    device: torch.device,
    overlap: bool = True,
) -> ScoreResult:
    """Run a prepared call through the model on the compute thread, tokenizing chunk k + 1 on a
    background thread while chunk k runs (with ``overlap``)."""
    distinct, orders, chunks = call.distinct, call.orders, call.chunks
    if distinct.count == 0:
        return ScoreResult(scores=np.empty(0, dtype=np.float32), tokens=0, device_seconds=0.0)
    clock = ForwardClock(device)
    jobs = [partial(_tokenize, model, items) for _, items in chunks]
    if call.first is not None:
        jobs[0] = partial(_prepared, call.first)
    tokenized = one_ahead(jobs, overlap=overlap)
    rows: list[list[np.ndarray]] = [[] for _ in distinct.parts]
    lengths: list[list[np.ndarray]] = [[] for _ in distinct.parts]
    truncated: list[list[np.ndarray | None]] = [[] for _ in distinct.parts]
    with closing(tokenized):  # on an error, stop the tokenizing thread before the error leaves
        for (part, _), chunk in zip(chunks, tokenized, strict=True):
            rows[part].append(batcher.run(chunk.lengths, partial(_run_batch, model, chunk, clock=clock)))
            lengths[part].append(chunk.lengths)
            truncated[part].append(getattr(chunk, "truncated", None))
    scores = distinct.combine(
        [
            in_item_order(np.concatenate(part_rows), order)
            for part_rows, order in zip(rows, orders, strict=True)
        ]
    )
    pair_tokens = sum(
        in_item_order(np.concatenate(part_lengths), order)[items]
        for part_lengths, order, items in zip(lengths, orders, distinct.items_of_pairs, strict=True)
    )
    return ScoreResult(
        scores=scores.astype(np.float32, copy=False),
        tokens=int(sum(int(chunk_lengths.sum()) for part in lengths for chunk_lengths in part)),
        device_seconds=clock.seconds,
        pair_tokens=np.asarray(pair_tokens, dtype=np.int64),
        truncated=_pairs_truncated(truncated, orders, distinct.items_of_pairs),
    )


def _prepared(chunk: Tokenized) -> Tokenized:
    return chunk


def _pairs_truncated(
    truncated: list[list[np.ndarray | None]], orders: list[np.ndarray], items_of_pairs: tuple[np.ndarray, ...]
) -> np.ndarray | None:
    """Per pair, whether any item it reads was cut to fit; None when a chunk could not tell."""
    if any(flags is None for part in truncated for flags in part):
        return None
    per_part = [
        in_item_order(np.concatenate([flags for flags in part if flags is not None]), order)[items]
        for part, order, items in zip(truncated, orders, items_of_pairs, strict=True)
    ]
    return np.logical_or.reduce(per_part)


def _run_batch(
    model: LocalModel[Any, ChunkT, Any], chunk: ChunkT, rows: np.ndarray, clock: ForwardClock
) -> DeferredRows:
    """Launch one batch; its outputs are copied to the host behind it and post-processed when collected."""
    with torch.inference_mode():
        batch = model.collate(chunk, rows)
        with clock.measure():
            outputs = model.forward(batch)
        on_host = HostCopy(outputs)

    def collect() -> np.ndarray:
        with torch.inference_mode():
            return model.postprocess(on_host.wait())

    return DeferredRows(len(outputs), collect)


class LocalReranker(Generic[ModelT]):
    """A ``Reranker`` made of a local model and the shared pipeline. The batcher, and so the token budget
    it learns, lives as long as the loaded model."""

    def __init__(
        self, spec: ModelSpec, model: ModelT, target: ComputeTarget, *, overlap: bool = True
    ) -> None:
        self.spec = spec
        self.model = model
        self.target = target
        # Fixed shapes need a model that pads lengths as told; the others batch freely.
        self.shapes = target.shapes if getattr(model, "pads_to_fixed_shapes", False) else None
        self.batcher = TokenBudgetBatcher(target.token_budget, shapes=self.shapes)
        self.overlap = overlap
        self.first_chunk = first_chunk_size(target.token_budget)

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        """Score pair i = (queries[i], texts[i]); identical inputs are computed once. Prepared on the
        caller's thread, run on the process's compute thread, so calls from several threads take turns."""
        return score(
            self.model,
            queries,
            texts,
            batcher=self.batcher,
            device=self.target.device,
            first_chunk=self.first_chunk,
            overlap=self.overlap,
        )

    def use_shapes(self, shapes: FixedShapes) -> None:
        """Pad batches to ``shapes`` from now on (a model that pads to fixed shapes only)."""
        self.shapes = shapes
        self.target = replace(self.target, shapes=shapes)
        self.batcher = TokenBudgetBatcher(self.target.token_budget, shapes=shapes)

    def use_budget(self, budget: int) -> None:
        """Batch under ``budget`` padded tokens from now on (a new batcher learns from there)."""
        self.target = replace(self.target, token_budget=budget)
        self.batcher = TokenBudgetBatcher(budget, shapes=self.shapes)
        self.first_chunk = first_chunk_size(budget)

    def describe(self) -> dict[str, str]:
        return {
            "kind": self.spec.kind,
            "name": self.spec.name,
            "device": str(self.target.device),
            "dtype": describe_dtype(self.target.dtype),
            "batch_shapes": "free" if self.batcher.shapes is None else self.batcher.shapes.describe(),
            **self.model.describe(self.batcher.max_budget),
        }


def longest_first(items: Sequence[Any]) -> np.ndarray:
    """Indices of ``items`` by their characters, most first (a text, or the texts of a tuple such as a
    pair); equal sizes keep their order."""
    return length_order(np.fromiter((_characters(item) for item in items), dtype=np.int64, count=len(items)))


def _characters(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, tuple):
        return sum(len(part) for part in item if isinstance(part, str))
    return 0


def in_item_order(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``rows`` computed for the items taken in ``order``, put back in item order."""
    restored = np.empty_like(rows)
    restored[order] = rows
    return restored


def first_chunk_size(token_budget: int) -> int:
    """Items in a call's first chunk: enough to fill the first batches, few enough to start soon."""
    return max(MIN_FIRST_CHUNK, token_budget // FIRST_CHUNK_TOKENS_PER_ITEM)
