"""How fast the host alone can feed ours: its tokenizer over the benchmark's pairs, and nothing else.

A GPU can score a small model faster than the CPU tokenizes its pairs; ours can go no faster than its
tokenizer, so this figure beside ours' pairs/s tells a run bound by the host from one bound by the device.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.corpus import BenchCorpus

MAX_LENGTH = 512  # both benchmark shapes' (sentence-transformers reads it from the model's config)


def tokenizer_pairs_per_s(model_dir: Path, corpus: BenchCorpus, rounds: int = 2) -> float:
    """Pairs per second of ours' tokenizer (``PairTokenizer``: one call over all the pairs, its ids
    flattened into numpy arrays), the best of ``rounds``."""
    from transformers import AutoTokenizer

    from worker.backends.local.pair_tokens import PairTokenizer

    tokenize = PairTokenizer(AutoTokenizer.from_pretrained(str(model_dir)), MAX_LENGTH)
    pairs = corpus.pairs
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        tokenize(pairs)
        best = min(best, time.perf_counter() - started)
    return len(pairs) / best
