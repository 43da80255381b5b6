"""Adaptive token-budget batching shared by every local backend.

Items are sorted longest first and cut into consecutive batches whose padded size
(``len(batch) * longest item``) stays within a budget of tokens. On CUDA out-of-memory the budget is
halved and the same items are retried; after a run of clean batches it grows back, but only to just
below the smallest batch that failed, so it settles there instead of failing again every few batches.
After ``probe_after`` clean batches at that ceiling it is forgotten and growth resumes (memory another
process held may have been freed). The learned budget lives on the batcher, so it persists for as long
as the loaded model does.

A batch's rows may come back as ``DeferredRows``: the device still computing them, their copy to the
host queued behind. They are collected once the chunk's last batch has been launched, so on CUDA the
host waits once per chunk, not once per batch, and the next batch's inputs are prepared while the
previous one runs.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import DeviceOutOfMemoryError
from worker.backends.local.batch_shapes import FixedShapes
from worker.backends.progress_sink import report_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeferredRows:
    """``count`` rows of a batch whose values ``collect()`` returns, waiting for the device if need be."""

    count: int
    collect: Callable[[], np.ndarray]


Forward = Callable[[np.ndarray], "np.ndarray | DeferredRows"]

# The budget grows back to at most this share of the smallest padded batch that ran out of memory.
SETTLE_SHARE = 0.9
# What a failed device allocation says, whichever library hit it first.
OUT_OF_MEMORY_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


@dataclass(frozen=True)
class BudgetChange:
    """One change of the token budget: when (``time.monotonic()`` seconds), to what, and why."""

    at: float
    budget: int
    reason: str  # "start", "oom", "grow" or "probe" (the remembered failure forgotten)


def _store(results: np.ndarray | None, items: int, batch: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` written at ``batch`` into ``results`` (allocated for ``items`` rows like ``rows``)."""
    if results is None:
        results = np.empty((items, *rows.shape[1:]), dtype=rows.dtype)
    results[batch] = rows
    return results


class TokenBudgetBatcher:
    """Cuts length-sorted items into batches of at most ``budget`` padded tokens and adapts the budget."""

    def __init__(
        self,
        max_budget: int,
        *,
        grow_after: int = 20,
        grow_factor: float = 1.25,
        probe_after: int = 1000,
        history_size: int = 1000,
        shapes: FixedShapes | None = None,
    ) -> None:
        """``shapes``: batch shapes that keep a score independent of its batch (``batch_shapes``); they
        are given up, with a warning, once out-of-memory forces batches below ``shapes.row_step`` rows."""
        if max_budget < 1:
            raise ValueError(f"max_budget must be at least 1 token, got {max_budget}")
        if grow_after < 1 or grow_factor <= 1.0:
            raise ValueError("grow_after must be >= 1 and grow_factor > 1")
        self.max_budget = max_budget
        self.budget = max_budget
        self.shapes = shapes
        self.grow_after = grow_after
        self.grow_factor = grow_factor
        self.probe_after = probe_after
        # Below the smallest padded batch that ran out of memory; None: no failure remembered.
        self.ceiling: int | None = None
        self._batches_at_ceiling = 0
        self.oom_count = 0
        # Tokens of the items scored, and of the padded batches they ran in (rows x longest item).
        self.real_tokens = 0
        self.padded_tokens = 0
        self._clean_batches = 0
        self._history: deque[BudgetChange] = deque(maxlen=history_size)
        self._record("start")

    @property
    def history(self) -> tuple[BudgetChange, ...]:
        """The most recent budget changes, oldest first (the first entry is the starting budget)."""
        return tuple(self._history)

    def run(self, lengths: np.ndarray, forward: Forward) -> np.ndarray:
        """Call ``forward(indices)`` on budgeted batches; return its rows in input order.

        ``forward`` gets the indices of one batch (into ``lengths``) and returns one row per index.
        Every item is passed to ``forward`` exactly once in a successful call; none is dropped.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        order = length_order(lengths)
        results: np.ndarray | None = None
        deferred: list[tuple[np.ndarray, DeferredRows]] = []
        start = 0
        while start < len(order):
            batch = next_batch(order, lengths, start, self.budget, self.shapes)
            longest = max(int(lengths[batch].max()), 1)
            width = longest if self.shapes is None else self.shapes.width(longest)
            padded = batch if self.shapes is None else self.shapes.padded_rows(batch, width, self.budget)
            oom_message = None
            try:
                produced = forward(padded)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                oom_message = str(error)
            if oom_message is not None:
                # Handled outside the except block: the traceback pins the failed batch's tensors, and
                # they must be released before the cache can be emptied.
                self._shrink(batch, lengths, oom_message)
                continue
            produced_rows = produced.count if isinstance(produced, DeferredRows) else len(produced)
            if produced_rows != len(padded):
                raise ValueError(f"forward returned {produced_rows} rows for a batch of {len(padded)}")
            if isinstance(produced, DeferredRows):
                deferred.append((batch, produced))
            else:
                results = _store(results, len(lengths), batch, np.asarray(produced)[: len(batch)])
            start += len(batch)
            self.real_tokens += int(lengths[batch].sum())
            self.padded_tokens += len(padded) * width
            report_progress(len(batch), int(lengths[batch].sum()))
            self._after_clean_batch()
        for batch, rows in deferred:
            results = _store(results, len(lengths), batch, np.asarray(rows.collect())[: len(batch)])
        if results is None:
            return np.empty(0, dtype=np.float32)
        return results

    def _shrink(self, failed_batch: np.ndarray, lengths: np.ndarray, oom_message: str) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.oom_count += 1
        longest = int(lengths[failed_batch].max())
        width = longest if self.shapes is None else self.shapes.width(longest)
        failed_tokens = len(failed_batch) * width
        settled = max(longest, int(failed_tokens * SETTLE_SHARE))
        self.ceiling = settled if self.ceiling is None else min(self.ceiling, settled)
        self._batches_at_ceiling = 0
        if self.shapes is not None:
            log.warning(
                "out of memory with batch shapes fixed for batch-invariant scores; batching freely from now "
                "on, so scores may depend on their batch by a rounding step"
            )
            self.shapes = None
        if len(failed_batch) == 1:
            raise DeviceOutOfMemoryError(
                f"a single item of {longest} tokens does not fit in device memory ({oom_message}); "
                "lower RERANK_MAX_LENGTH or use a device with more memory"
            )
        # Halving never goes below one item of the failed batch's longest length, so a retry always
        # makes progress: the next cut holds fewer items than the one that failed.
        self.budget = max(longest, min(self.budget, len(failed_batch) * longest) // 2)
        self._clean_batches = 0
        self._record("oom")

    def _after_clean_batch(self) -> None:
        self._clean_batches += 1
        limit = self.max_budget if self.ceiling is None else min(self.max_budget, self.ceiling)
        if self.budget >= limit and self.ceiling is not None:
            self._batches_at_ceiling += 1
            if self._batches_at_ceiling >= self.probe_after:
                self.ceiling = None
                self._record("probe")
        if self._clean_batches >= self.grow_after and self.budget < limit:
            self.budget = min(limit, max(self.budget + 1, int(self.budget * self.grow_factor)))
            self._clean_batches = 0
            self._record("grow")

    def _record(self, reason: str) -> None:
        self._history.append(BudgetChange(at=time.monotonic(), budget=self.budget, reason=reason))


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Indices sorted longest first; equal lengths keep their input order."""
    return np.argsort(-lengths, kind="stable")


def next_batch(
    order: np.ndarray, lengths: np.ndarray, start: int, budget: int, shapes: FixedShapes | None = None
) -> np.ndarray:
    """The longest run of ``order[start:]`` with ``count * longest <= budget``, at least one item.

    With ``shapes``, the width is the longest item's bucket, the run stays in that bucket, and its count is
    a multiple of ``shapes.row_step`` (at least one step) unless the bucket runs out first."""
    # Sorted longest first, so the first item is the batch's longest and sets its padded width.
    longest = max(int(lengths[order[start]]), 1)
    if shapes is None:
        count = max(1, budget // longest)
        return order[start : start + count]
    width = shapes.width(longest)
    count = shapes.rows(width, budget)
    candidates = order[start : start + count]
    in_bucket = np.fromiter(
        (shapes.width(length) == width for length in lengths[candidates]), dtype=bool, count=len(candidates)
    )
    stop = len(candidates) if in_bucket.all() else int(np.argmin(in_bucket))
    return candidates[: max(1, stop)]


def is_out_of_memory(error: BaseException) -> bool:
    """True for a failed device allocation: CUDA out-of-memory, whether raised as its own type or as a
    plain ``RuntimeError``, and cuBLAS or cuDNN failing to allocate their workspace."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return any(marker in text for marker in OUT_OF_MEMORY_MARKERS)
