"""How fast the host alone can feed ours: its tokenizer over the benchmark's pairs, and nothing else.

A GPU can score a small model faster than the CPU tokenizes its pairs; ours can go no faster than its
tokenizer, so this figure beside ours' pairs/s tells a run bound by the host from one bound by the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.corpus import BenchCorpus


def tokenizer_pairs_per_s(
    tokenize: Callable[[list[tuple[str, str]]], object], corpus: BenchCorpus, rounds: int = 2
) -> float:
    """Pairs per second of ``tokenize`` (ours' ``PairTokenizer``: one call over all the pairs, its ids
    flattened into numpy arrays) over ``corpus``, the best of ``rounds``."""
    pairs = corpus.pairs
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        tokenize(pairs)
        best = min(best, time.perf_counter() - started)
    return len(pairs) / best
