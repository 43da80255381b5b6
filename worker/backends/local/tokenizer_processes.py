"""A chunk of pairs tokenized by helper processes, each a slice, for hosts whose device outruns one process.

Turning a Rust tokenizer's encodings into Python lists and numpy arrays holds the GIL for every pair
(~20 us a pair, whatever the cores), so one process can feed a device at most a few tens of thousands of
pairs/s however many threads its tokenizer runs; a GPU scores a small cross-encoder faster than that.
Helper processes each encode and flatten a slice of the chunk and send back its arrays; the ids are
exactly those of the same tokenizer in the worker's own process.

The helpers are started with ``spawn`` (the worker runs threads, which ``fork`` would copy mid-flight),
import no torch, and end with the process that started them, even when it is killed (Linux's parent-death
signal), so a killed worker leaves no tokenizer behind.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from worker.backends.local.pair_encoding import EncoderState, PairEncoder, TokenizedPairs, concatenate

# Below this many pairs a slice's round trip costs more than encoding it here.
MIN_PAIRS_PER_PROCESS = 64
_PR_SET_PDEATHSIG = 1

_encoder: PairEncoder | None = None  # the helper process's own encoder, built once by _start


def tokenizer_helpers(setting: int | None, device_type: str, threads: int) -> int:
    """How many helper processes tokenize for a local model: ``setting`` (RERANK_TOKENIZER_PROCESSES)
    where given; else, on a GPU with at least 3 CPU threads, the worker's threads but one (the one that
    feeds the device), and none on a CPU, whose cores are the model's. With fewer threads one helper,
    encoding on one thread, tokenizes slower than the worker's tokenizer on its threads."""
    if setting is not None:
        return setting
    return threads - 1 if device_type == "cuda" and threads >= 3 else 0


class TokenizerProcesses:
    """``processes`` helper processes that tokenize slices of a chunk with copies of one encoder."""

    def __init__(self, state: EncoderState, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"tokenizer processes must be at least 1, got {processes}")
        self.processes = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(state, os.getpid()),
        )
        # Start every helper now (model load), not on the first chunk a shard brings.
        list(self._pool.map(_ready, range(processes)))

    def __call__(self, pairs: Sequence[Any]) -> TokenizedPairs | None:
        """``pairs`` tokenized in slices by the helpers, or None when there are too few to pay for it."""
        slices = min(self.processes, len(pairs) // MIN_PAIRS_PER_PROCESS)
        if slices < 1:
            return None
        bounds = np.linspace(0, len(pairs), slices + 1).astype(int)
        parts = self._pool.map(
            _tokenize, [list(pairs[start:stop]) for start, stop in itertools.pairwise(bounds)]
        )
        return concatenate(list(parts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _start(state: EncoderState, parent_pid: int) -> None:
    global _encoder
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    # One slice per helper: its tokenizer need not start threads of its own.
    os.environ["RAYON_NUM_THREADS"] = "1"
    _encoder = PairEncoder(state)


def _ready(_: int) -> int:
    return os.getpid()


def _tokenize(pairs: list[Any]) -> TokenizedPairs:
    assert _encoder is not None, "helper process not started"
    return _encoder(pairs)
